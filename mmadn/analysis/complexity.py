"""FLOPs and parameter counts of sub-networks, through mmengine.analysis.

Importing this module registers a FLOP handle for ``aten::scaled_dot_product_attention`` in
mmengine.analysis' default op table (mmengine counts no FLOPs for it, so attention models
came out short by their two attention matmuls). Everything else is mmengine's own counting.

FLOPs follow mmengine's (and the papers') convention: one multiply-add counts as one.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis import complexity_analysis as _mm_complexity
from mmengine.analysis.jit_handles import get_shape

from ..models.layers.skip import SkipLike

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``softmax(q k^T) v``: ``q`` is ``(..., L, E)``, ``k`` ``(..., S, E)``, ``v``
    ``(..., S, Ev)``; two batched matmuls, ``L*S*E + L*S*Ev`` multiply-adds per batch
    element (the softmax is not counted, as mmengine counts no activations)."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    length, emb = q[-2], q[-1]
    src = k[-2]
    return batch * length * src * (emb + v[-1])


def register_flop_handles() -> None:
    """Add the project's handles to mmengine.analysis' defaults (idempotent)."""
    _mm_complexity._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(SDPA_OP, sdpa_flop_jit)


register_flop_handles()


class _ForwardOnly(nn.Module):
    """Wraps a callable on a model so that the tracer sees a plain ``forward``."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self, *args):
        return self._fn(*args)


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Tuple],
                forward: Optional[Callable] = None) -> int:
    """Multiply-adds of one forward, counted by mmengine's :class:`FlopAnalyzer` (with the
    project's extra handles). ``forward`` is what to trace (default ``model.forward``)."""
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    target = model if forward is None else _ForwardOnly(model, forward)
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(target, inputs)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analyzer.total())
    finally:
        model.train(was_training)


def count_active_params(model: nn.Module, inputs: Union[torch.Tensor, Tuple],
                        forward: Optional[Callable] = None) -> int:
    """Parameters of the modules that a forward actually calls: skipped blocks and the
    unused set of skip-aware norms are not counted (a module's own parameters count once,
    however often it is called)."""
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    called = set()
    handles = [
        m.register_forward_pre_hook(lambda mod, _args: called.add(id(mod)))
        for m in model.modules()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (forward or model)(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    seen, total = set(), 0
    for m in model.modules():
        if id(m) not in called:
            continue
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def subnet_complexity(model: nn.Module, backbone, inputs: Union[torch.Tensor,
                                                                Tuple], skips: Sequence[SkipLike],
                      forward: Optional[Callable] = None) -> Dict[str, Dict[str, float]]:
    """``{'TTFF': {'gflops': ..., 'params_m': ...}, ...}``: each sub-network of
    ``backbone`` (an ADN backbone inside ``model``) measured with ``forward``."""
    results = {}
    for skip in skips:
        with backbone.skipping(skip):
            results[backbone.skip_str] = dict(
                gflops=count_flops(model, inputs, forward) / 1e9,
                params_m=count_active_params(model, inputs, forward) / 1e6)
    return results
