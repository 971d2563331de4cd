"""A sequence of blocks whose blocks from ``num_shared_blocks`` on form a skippable
sub-path: a ResNet-ADN stage (:class:`~mmadn.models.backbones.resnet_adn.ADNResLayer`) and
the blocks of a skippable ``CSPLayer`` (:class:`~mmadn.models.layers.csp.SkippableCSPBlocks`).

The flag is kept twice: ``skip_subpath`` (eager mode runs a Python ``if`` on it) and the
non-persistent 0-dim bool buffer ``skip_flag``. In eval mode, while ``torch.compile`` or
``torch.export`` traces, the blocks run as a ``torch.cond`` on the buffer between their two
sub-paths, so one graph serves both and a depth switch only writes the buffer. In training
mode (the norms update their statistics, which a ``torch.cond`` branch may not do) the
Python ``if`` is traced: one graph per depth.
"""
import itertools

import torch
from torch import nn

from ...utils.torch_compat import has_cond, is_compiling, is_exporting
from .skip_aware import SkipAwareNormMixin


class SkippableBlocksMixin:
    """For an ``nn.Sequential`` of blocks (it comes before it in the bases): the first
    ``num_shared_blocks`` always run, the others only while ``skip_subpath`` is False; the
    shared blocks' skip-aware norms are in use while it is True."""

    num_shared_blocks: int
    skip_subpath: bool

    def init_skippable(self, num_shared_blocks: int) -> None:
        """Call once the blocks exist (and the shared ones have their skip norms)."""
        self.num_shared_blocks = num_shared_blocks
        self.skip_subpath = False  # True: only the shared blocks run
        self.register_buffer('skip_flag', torch.zeros((), dtype=torch.bool), persistent=False)
        for block in self.shared_blocks():
            norm_set_tree_view(block, True)  # made now, not while a graph is traced

    def shared_blocks(self):
        return itertools.islice(self._modules.values(), self.num_shared_blocks)

    def set_skip_subpath(self, flag: bool) -> None:
        self.skip_subpath = bool(flag)
        for block in self.shared_blocks():
            set_tree_skip_norms(block, self.skip_subpath)
        with torch.no_grad():
            self.skip_flag.fill_(self.skip_subpath)

    def forward(self, x):
        if not self.training and has_cond() and (is_compiling() or is_exporting()):
            if not is_exporting():
                # inductor compiles each branch for the strides it was traced with and may
                # lay the input out channels-last: fix the layout on both sides
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.cond(self.skip_flag, self._shared_path, self._full_path, (x, ))
        if not self.skip_subpath:
            return super().forward(x)
        for block in self.shared_blocks():
            x = block(x)
        return x

    def _shared_path(self, x):
        """The sub-path while the blocks skip: the shared blocks with their skip norms."""
        for block in self.shared_blocks():
            x = norm_set_tree_view(block, True)(x)
        return x

    def _full_path(self, x):
        """Every block, the shared ones with their normal norms."""
        for i, block in enumerate(self._modules.values()):
            x = norm_set_tree_view(block, False)(x) if i < self.num_shared_blocks else block(x)
        return x


def set_tree_skip_norms(module: nn.Module, flag: bool) -> None:
    """``set_use_skip_norms(flag)`` on ``module`` if it is skip-aware, else on every
    outermost skip-aware module inside it."""
    if isinstance(module, SkipAwareNormMixin):
        module.set_use_skip_norms(flag)
        return
    for child in module.children():
        set_tree_skip_norms(child, flag)


def norm_set_tree_view(module: nn.Module, skip_norms: bool) -> nn.Module:
    """``module`` with the norm set of every skip-aware module inside it fixed (see
    :meth:`SkipAwareNormMixin.norm_set_view`): a second object of its class whose children
    are their views, everything else shared. A module without skip-aware modules inside is
    its own view. Made on the first call and kept outside ``_modules``."""
    if isinstance(module, SkipAwareNormMixin):
        return module.norm_set_view(skip_norms)
    views = module.__dict__.get('_norm_set_tree_views')
    if views is None:
        views = {}
        for flag in (False, True):
            children = {n: norm_set_tree_view(c, flag) for n, c in module._modules.items()}
            if all(children[n] is c for n, c in module._modules.items()):
                views[flag] = module
                continue
            view = type(module).__new__(type(module))
            view.__dict__.update(module.__dict__)
            view.__dict__.pop('_norm_set_tree_views', None)
            view.__dict__['_modules'] = children
            views[flag] = view
        module.__dict__['_norm_set_tree_views'] = views
    return views[bool(skip_norms)]
