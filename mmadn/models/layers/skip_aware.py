"""Skip-aware norms and the adaptive-depth interface shared by every ADN backbone.

Skip-aware norms are sibling modules: a shared block owns ``bn1`` and ``bn1_skip`` (same
type and shape) and uses the second set while its stage skips its specialized sub-path.
Siblings keep checkpoint keys torchvision/mmdet-compatible and survive ``SyncBatchNorm``
conversion (a custom norm subclass would not).
"""
import contextlib
import copy
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.logging import print_log

from ...utils.checkpoint_io import CheckpointMismatchError
from ...utils.torch_compat import register_load_state_dict_pre_hook
from .skip import SkipLike, SkipTuple, enumerate_skips, format_skip, parse_skip

SKIP_SUFFIX = '_skip'
_NORM_STATE = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


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

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        """``[('bn1_skip', 'bn1'), ...]`` for a skip-aware block, else ``[]``."""
        if not self.skip_aware:
            return []
        return [(getattr(self, a) + SKIP_SUFFIX, getattr(self, a))
                for a in self.norm_name_attrs]

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


class AdaptiveDepthMixin:
    """The run-time depth API of an ADN backbone.

    The class provides :meth:`_apply_skip` (push a normalized skip tuple into its stages),
    :meth:`skip_norm_pairs` (``(skip_name, partner_name)`` for every skip-aware norm,
    relative to the backbone) and ``num_skippable_stages``.
    """

    num_skippable_stages: int

    def _apply_skip(self, skip: SkipTuple) -> None:
        raise NotImplementedError

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        raise NotImplementedError

    @property
    def skip(self) -> SkipTuple:
        """The active skip configuration, a tuple of ``num_skippable_stages`` bools."""
        return self._skip

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self.set_skip(value)

    @property
    def skip_str(self) -> str:
        return format_skip(self._skip)

    def set_skip(self, skip: SkipLike):
        """Switch to another sub-network at once (nothing is rebuilt or reloaded)."""
        parsed = parse_skip(skip, self.num_skippable_stages)
        if parsed != getattr(self, '_skip', None):
            self._apply_skip(parsed)
            self.__dict__['_skip'] = parsed
        return self

    @contextlib.contextmanager
    def skipping(self, skip: SkipLike):
        """``with backbone.skipping('TTTT'): ...`` runs that sub-network, then restores."""
        saved = self._skip
        self.set_skip(skip)
        try:
            yield self
        finally:
            self.set_skip(saved)

    def train(self, mode: bool = True):
        super().train(mode)  # some upstream backbones return None here
        return self

    def subnet_skips(self) -> Iterator[SkipTuple]:
        """Every sub-network's skip tuple, super-net first, base-net last."""
        return enumerate_skips(self.num_skippable_stages)

    def copy_skip_norms_from_partners(self) -> None:
        """Make every ``*_skip`` norm an exact copy of its partner (parameters and stats)."""
        modules = dict(self.named_modules())
        with torch.no_grad():
            for skip_name, partner_name in self.skip_norm_pairs():
                modules[skip_name].load_state_dict(modules[partner_name].state_dict())

    def _fill_skip_norms_on_load(self) -> None:
        """Call at the end of ``__init__``: then checkpoints without ``*_skip`` keys load,
        each skip norm a copy of its partner (see :meth:`_fill_missing_skip_norms`)."""
        register_load_state_dict_pre_hook(self, self._skip_norm_load_pre_hook)

    def _skip_norm_load_pre_hook(self, module, state_dict: Dict[str, torch.Tensor],
                                 prefix: str, *args, **kwargs) -> None:
        self._fill_missing_skip_norms(state_dict, prefix)

    def _copy_skip_norms_unless_pretrained(self) -> None:
        """For the end of ``init_weights``: after a random init each skip norm becomes a
        copy of its partner; a ``Pretrained`` init_cfg has already filled them on load."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        if not any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs):
            self.copy_skip_norms_from_partners()

    def _fill_missing_skip_norms(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> None:
        """Load-time hook: a checkpoint without any ``*_skip`` key (torchvision, mmdet or
        mmpretrain ResNet) initializes each skip norm as a copy of its partner.

        A backbone built without skip-aware norms leaves a checkpoint's skip norms out.
        A checkpoint with some skip norms but not this backbone's set (trained with another
        split into shared and skippable blocks) is refused: filling the rest would load
        norms of the wrong blocks and give wrong sub-network outputs.
        """
        pairs = self.skip_norm_pairs()
        modules = {k[len(prefix):].rpartition('.')[0] for k in state_dict
                   if k.startswith(prefix)}
        in_ckpt = {m for m in modules if m.rpartition('.')[2].endswith(SKIP_SUFFIX)}
        if in_ckpt and not pairs:
            # skip-aware norms switched off here: one norm set serves every depth, so the
            # checkpoint's skip norms have no module to go to and are left out
            dropped = [k for k in list(state_dict)
                       if k.startswith(prefix) and k[len(prefix):].rpartition('.')[0] in in_ckpt]
            for k in dropped:
                del state_dict[k]
            print_log(
                f'{type(self).__name__}: built without skip-aware norms; the checkpoint\'s '
                f'{len(in_ckpt)} skip norms ({sorted(in_ckpt)[0]}, ...) are not loaded and '
                'every depth uses the shared norms.',
                logger='current')
            return
        if in_ckpt:
            own = {s for s, _ in pairs}
            # a partial state dict (some modules only) needs only its modules' skip norms
            missing = sorted({s for s, p in pairs if p in modules} - in_ckpt)
            extra = sorted(in_ckpt - own)
            if missing or extra:
                raise CheckpointMismatchError(
                    self._split_mismatch(sorted(in_ckpt), missing, extra, prefix))
            return
        copied = []
        for skip_name, partner_name in pairs:
            skip_key, partner_key = prefix + skip_name, prefix + partner_name
            if partner_name not in modules:
                continue
            for field in _NORM_STATE:
                if partner_key + '.' + field in state_dict:
                    state_dict[skip_key + '.' + field] = state_dict[partner_key + '.' + field]
            copied.append(skip_name)
        if copied:
            print_log(
                f'{type(self).__name__}: the checkpoint has no skip-aware norms; '
                f'{len(copied)} of them ({copied[0]}, ...) start as copies of their '
                'partners (e.g. bn1_skip <- bn1).',
                logger='current')

    def split_of_skip_norms(self, skip_norms: List[str]) -> Optional[str]:
        """The split (e.g. ``'num_shared_blocks=(1, 2, 3, 1)'``) that the given skip-norm
        module names imply, for messages; None where a backbone cannot tell."""
        return None

    def own_split(self) -> Optional[str]:
        """This backbone's split, in the form of :meth:`split_of_skip_norms`."""
        return None

    def _split_mismatch(self, in_ckpt: List[str], missing: List[str], extra: List[str],
                        prefix: str) -> str:
        where = f' (prefix {prefix!r})' if prefix else ''
        theirs, ours = self.split_of_skip_norms(in_ckpt), self.own_split()
        if theirs and ours:
            split = (f'it was trained with {theirs}, this {type(self).__name__} has {ours}; '
                     f'build the backbone with {theirs} (e.g. --cfg-options '
                     f"model.backbone.{theirs.replace(' ', '')}) or load a checkpoint of "
                     'this split')
        else:
            split = ('it was trained with another split into shared and skippable blocks; '
                     'build the backbone with the split of the checkpoint')
        detail = []
        if missing:
            detail.append(f'{len(missing)} skip norms of this backbone are missing, e.g. '
                          f'{missing[0]}')
        if extra:
            detail.append(f'{len(extra)} are not in this backbone, e.g. {extra[0]}')
        return (f'{type(self).__name__}: the checkpoint{where} holds skip-aware norms for '
                f'other blocks than this backbone ({"; ".join(detail)}): {split}. (Only a '
                'checkpoint without any *_skip norm gets them filled from their partners.)')


def active_norm(index: int) -> property:
    """A property returning the ``index``-th norm of the active set, for a block whose
    forward reads its norms under their own module names (``self.ln1``, ``self.norm``)
    rather than through ``norm1``/``norm2``/``norm3``. Assigning a module to that name
    still registers it in ``_modules`` (``nn.Module.__setattr__`` runs first)."""
    return property(lambda self: self._modules[self._active_norms[index]],
                    doc=f'The active norm #{index} (the primary one or its skip sibling).')


def make_skip_aware(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """Turn an already built block of an upstream class into ``cls``, its subclass that
    mixes in :class:`SkipAwareNormMixin` (the way ``torch.nn.utils.parametrize`` swaps a
    module's class): no parameter is rebuilt, so the upstream construction and its
    checkpoint keys stay as they are. Skip norms are added by ``add_skip_norms``."""
    if not (issubclass(cls, type(module)) and issubclass(cls, SkipAwareNormMixin)):
        raise TypeError(f'{cls.__name__} must subclass both {type(module).__name__} and '
                        'SkipAwareNormMixin')
    module.__class__ = cls
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
