"""Skip-aware norms of the blocks shared by several sub-networks.

Skip-aware norms are sibling modules: a shared block owns ``bn1`` and ``bn1_skip`` (same
type and shape) and uses the second set while its stage skips its specialized sub-path.
Siblings keep checkpoint keys torchvision/mmdet-compatible and survive ``SyncBatchNorm``
conversion (a custom norm subclass would not).
"""
import contextlib
import copy
from typing import List, Tuple

import torch
from mmcv.cnn import ConvModule

SKIP_SUFFIX = '_skip'


class SkipAwareNormMixin:
    """For a block whose norms are named in ``self.<attr>`` for ``attr`` in
    ``norm_name_attrs`` (mmdet's ``norm1_name`` ...) and read through the ``norm1``,
    ``norm2``, ``norm3`` properties. Call :meth:`_init_skip_aware` at the end of
    ``__init__``; :meth:`add_skip_norms` makes the block shared (skip-aware)."""

    norm_name_attrs: Tuple[str, ...] = ()

    def _init_skip_aware(self) -> None:
        self.skip_aware = False
        self.use_skip_norms = False
        self._active_norms = tuple(getattr(self, a) for a in self.norm_name_attrs)

    def add_skip_norms(self) -> None:
        """Give every norm of this block a ``<name>_skip`` sibling (a copy)."""
        for attr in self.norm_name_attrs:
            name = getattr(self, attr)
            self.add_module(name + SKIP_SUFFIX, copy.deepcopy(self._modules[name]))
        self.skip_aware = True
        self.__dict__.pop('_norm_set_views', None)

    def norm_set_view(self, skip_norms: bool) -> torch.nn.Module:
        """This block with its norm set fixed: the skip norms (``skip_norms=True``, the
        normal ones for a block without skip norms) or the normal ones.

        A view is a second object of the block's class that shares the block's modules,
        parameters, buffers and hooks (the same dicts), so weights, ``.to()``,
        ``load_state_dict`` and norm conversions are seen through it; only the choice of
        norms is its own. Graphs that switch the depth at run time (the two branches of a
        ``torch.cond``) call views, since a branch may not change the block's state. The
        views are made on the first call (call it once before tracing) and are not
        submodules: they add nothing to ``state_dict`` or ``named_modules``.
        """
        views = self.__dict__.get('_norm_set_views')
        if views is None:
            views = {}
            for flag in (False, True):
                view = type(self).__new__(type(self))
                view.__dict__.update(self.__dict__)
                view.__dict__.pop('_norm_set_views', None)
                use = flag and self.skip_aware
                suffix = SKIP_SUFFIX if use else ''
                view.__dict__.update(
                    use_skip_norms=use,
                    _active_norms=tuple(getattr(self, a) + suffix for a in self.norm_name_attrs))
                views[flag] = view
            self.__dict__['_norm_set_views'] = views
        return views[bool(skip_norms)]

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        """``[('bn1_skip', 'bn1'), ...]`` for a skip-aware block, else ``[]``."""
        if not self.skip_aware:
            return []
        return [(getattr(self, a) + SKIP_SUFFIX, getattr(self, a)) for a in self.norm_name_attrs]

    def set_use_skip_norms(self, flag: bool) -> None:
        flag = bool(flag) and self.skip_aware
        self.use_skip_norms = flag
        suffix = SKIP_SUFFIX if flag else ''
        self._active_norms = tuple(getattr(self, a) + suffix for a in self.norm_name_attrs)

    @contextlib.contextmanager
    def _norm_set(self, flag: bool):
        saved = self.use_skip_norms
        self.set_use_skip_norms(flag)
        try:
            yield
        finally:
            self.set_use_skip_norms(saved)

    # the parent classes read their norms through these properties
    @property
    def norm1(self):
        return self._modules[self._active_norms[0]]

    @property
    def norm2(self):
        return self._modules[self._active_norms[1]]

    @property
    def norm3(self):
        return self._modules[self._active_norms[2]]


def active_norm(index: int) -> property:
    """A property returning the ``index``-th norm of the active set, for a block whose
    forward reads its norms under their own module names (``self.ln1``, ``self.norm``)
    rather than through ``norm1``/``norm2``/``norm3``. Assigning a module to that name
    still registers it in ``_modules`` (``nn.Module.__setattr__`` runs first)."""
    return property(lambda self: self._modules[self._active_norms[index]],
                    doc=f'The active norm #{index} (the primary one or its skip sibling).')


def swap_class(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """Turn an already built module of an upstream class into ``cls``, a subclass of it
    that adds behaviour but no parameter (the way ``torch.nn.utils.parametrize`` swaps a
    module's class): the upstream construction and its checkpoint keys stay as they are."""
    if not issubclass(cls, type(module)):
        raise TypeError(f'{cls.__name__} must subclass {type(module).__name__}')
    module.__class__ = cls
    return module


def make_skip_aware(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """:func:`swap_class` to ``cls``, a subclass of the module's class that mixes in
    :class:`SkipAwareNormMixin`. Skip norms are added by ``add_skip_norms``."""
    if not issubclass(cls, SkipAwareNormMixin):
        raise TypeError(f'{cls.__name__} must subclass SkipAwareNormMixin')
    swap_class(module, cls)
    module._init_skip_aware()
    return module


def collect_skip_norm_pairs(root: torch.nn.Module) -> List[Tuple[str, str]]:
    """``(skip_name, partner_name)`` of every skip-aware block under ``root``, named
    relative to ``root`` (in module order)."""
    pairs = []
    for name, module in root.named_modules():
        if isinstance(module, SkipAwareNormMixin):
            prefix = name + '.' if name else ''
            pairs += [(prefix + s, prefix + p) for s, p in module.skip_norm_pairs()]
    return pairs


class ADNConvModule(SkipAwareNormMixin, ConvModule):
    """mmcv's ConvModule with a ``bn_skip`` sibling of its norm (``forward`` reads
    ``self.norm``); :func:`make_skip_aware` turns a built ConvModule into one."""
    norm_name_attrs = ('norm_name', )
    norm = active_norm(0)
