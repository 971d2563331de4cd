"""Give the skip-aware norms statistics of their own (skip-norm calibration).

A backbone that starts from a plain ImageNet ResNet gets each ``*_skip`` norm as a copy of
its partner. Under frozen BN (``norm_eval=True``, mmdet's detection default) those running
statistics never change, so a skipping stage normalizes the base-net's features with the
super-net's statistics. :func:`calibrate_skip_norms` re-estimates the running statistics of
exactly the skip norms that the given sub-networks use, from batches run through those
sub-networks; every other parameter and buffer stays as it was.
"""
import contextlib
from typing import Dict, Iterable, List, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from .skip import SkipLike, parse_skip


def _skip_batch_norms(backbone) -> Dict[str, _BatchNorm]:
    modules = dict(backbone.named_modules())
    norms = {s: modules[s] for s, _ in backbone.skip_norm_pairs()}
    return {
        name: m
        for name, m in norms.items() if isinstance(m, _BatchNorm) and m.track_running_stats
    }


@contextlib.contextmanager
def _preserved_rng():
    """Calibration must not change what training draws afterwards (augmentations, RPN
    sampling): save and restore the Python, numpy and torch generators."""
    import random

    import numpy as np
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@torch.no_grad()
def calibrate_skip_norms(
    backbone, batches: Iterable[torch.Tensor], skips: Sequence[SkipLike] = ('base', )) -> List[str]:
    """Re-estimate the running statistics of the skip norms used by ``skips``.

    Every batch is run through the backbone once per skip in ``skips``. A skip norm used by
    at least one of them has its running mean and variance reset and replaced by the
    cumulative average over those passes (BatchNorm ``momentum=None``); while that happens
    it normalizes with the batch's statistics, as in training. Every other module runs in
    eval mode, and nothing else changes: parameters, the partner norms, the skip norms that
    no listed sub-network uses, the backbone's active skip and its train/eval modes.

    Args:
        backbone: an ADN backbone (``skip_norm_pairs()``, ``skipping()``).
        batches: input tensors as the backbone takes them (after the data preprocessor).
        skips: the sub-networks whose skip norms are calibrated. Default: the base-net.

    Returns:
        The names (relative to the backbone) of the calibrated norms.
    """
    norms = _skip_batch_norms(backbone)
    if not norms:
        raise ValueError(
            f'{type(backbone).__name__} has no skip-aware BatchNorm with running statistics '
            '(skip_aware_norms=False, or LayerNorm only): there is nothing to calibrate')
    parsed = [parse_skip(s, backbone.num_skippable_stages) for s in skips]
    if not parsed:
        raise ValueError('skips=(): expected at least one sub-network, e.g. (\'base\', )')
    modes = {name: m.training for name, m in backbone.named_modules()}
    momenta = {name: m.momentum for name, m in norms.items()}
    seen: Dict[str, bool] = {}

    def first_use(name):

        def hook(module, _inputs):
            if name not in seen:
                seen[name] = True
                module.reset_running_stats()
                module.momentum = None
                module.train()

        return hook

    handles = [m.register_forward_pre_hook(first_use(n)) for n, m in norms.items()]
    backbone.eval()
    try:
        with _preserved_rng():
            for x in batches:
                for skip in parsed:
                    with backbone.skipping(skip):
                        backbone(x)
    finally:
        for h in handles:
            h.remove()
        for name, m in norms.items():
            m.momentum = momenta[name]
        for name, m in backbone.named_modules():
            m.training = modes[name]
    if not seen:
        raise ValueError('calibrate_skip_norms: no batch reached a skip norm (empty batches, '
                         f'or skips={list(skips)!r} skip no stage)')
    return [n for n in norms if n in seen]


def all_reduce_skip_norm_stats(backbone, names: Sequence[str]) -> None:
    """Average the calibrated statistics over the processes of a distributed run (each
    calibrated on its own batches), so that every rank holds the same model."""
    from mmengine import dist
    if dist.get_world_size() < 2:
        return
    modules = dict(backbone.named_modules())
    for name in names:
        m = modules[name]
        for buf in (m.running_mean, m.running_var):
            dist.all_reduce(buf, op='mean')
