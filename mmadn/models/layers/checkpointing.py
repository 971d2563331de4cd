"""Activation checkpointing (``with_cp``) of the blocks of the ADN backbones.

The upstream blocks checkpoint with torch's reentrant implementation, which breaks the two
passes (super-net, base-net) of one DDP step, and a block recomputed in backward would use
the norm set that its stage has switched to since its forward. A block with
:class:`CheckpointedBlockMixin` checkpoints its whole forward non-reentrantly instead: the
recomputation replays the norm set of every skip-aware module inside the block as it was in
the forward, and leaves the BatchNorm running statistics as the forward left them (they are
updated once, not again when the backward runs).
"""
import contextlib

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .skip_aware import SkipAwareNormMixin


class CheckpointedBlockMixin:
    """For a block of an upstream class whose ``forward(x, ...)`` checkpoints itself while
    ``self.with_cp and x.requires_grad``. ``with_cp`` keeps its upstream meaning and value
    (``block.with_cp`` reports what the block does); only the implementation differs."""

    def forward(self, x, *args):
        if not (self.with_cp and x.requires_grad):
            return super().forward(x, *args)
        norm_sets = [(m, m.use_skip_norms) for m in self.modules()
                     if isinstance(m, SkipAwareNormMixin)]
        return checkpoint(self._replay_forward, norm_sets, x, *args, use_reentrant=False,
                          context_fn=self._checkpoint_contexts)

    def _replay_forward(self, norm_sets, x, *args):
        with contextlib.ExitStack() as stack:
            for module, flag in norm_sets:
                stack.enter_context(module._norm_set(flag))
            stack.enter_context(self._upstream_checkpoint_off())
            return super().forward(x, *args)

    @contextlib.contextmanager
    def _upstream_checkpoint_off(self):
        """The upstream forward runs inside this checkpoint without checkpointing again."""
        saved, self.__dict__['with_cp'] = self.__dict__['with_cp'], False
        try:
            yield
        finally:
            self.__dict__['with_cp'] = saved

    def _checkpoint_contexts(self):
        return contextlib.nullcontext(), self._frozen_running_stats()

    @contextlib.contextmanager
    def _frozen_running_stats(self):
        """The recomputation runs as the forward did; its running-statistics update is
        undone."""
        stats = [(buf, buf.clone()) for m in self.modules()
                 if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
                 for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
                 if buf is not None]
        try:
            yield
        finally:
            with torch.no_grad():
                for buf, value in stats:
                    buf.copy_(value)
