"""Compile an ADN model once for every depth.

In eval mode, while ``torch.compile`` (dynamo) traces, each stage of an ADN backbone that
keeps its skip flag as a tensor (``backbone.skip_flag_buffers()``, ResNetADN) runs as a
``torch.cond`` between its two sub-paths: one graph holds every depth, and ``set_skip``
only writes the flags the graph reads. :func:`compile_all_depths` compiles a model's tensor
forward (a classifier whole, a detector's backbone + neck) with ``fullgraph=True``, runs
every depth once and checks with dynamo's own counters that the depths after the first
compiled nothing more and that no frame fell back to eager.
"""
import time
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from ..models.layers import find_adn_backbone
from ..models.layers.skip import SkipLike, format_skip, resolve_skips
from ..utils.torch_compat import has_cond, inductor_cond_options
from .static_export import tensor_forward


def dynamo_counts() -> Dict[str, int]:
    """Dynamo's own counters: graphs compiled so far, frames it started and finished, and
    frames it gave up on (recompile limit, unsupported code: those run eager)."""
    from torch._dynamo.utils import counters
    frames = counters['frames']
    return dict(graphs=int(counters['stats']['unique_graphs']), frames=int(frames['total']),
                frames_ok=int(frames['ok']), gave_up=int(sum(counters['unimplemented'].values())))


def dynamic_depth_backbone(model: nn.Module, user: str = 'this') -> nn.Module:
    """The model's ADN backbone, if its depth can change inside a compiled or exported
    graph (it keeps its skip flags as tensors); else NotImplementedError naming it."""
    backbone = find_adn_backbone(model, user=user)
    try:
        backbone.skip_flag_buffers()
    except NotImplementedError as err:
        raise NotImplementedError(f'{user}: {err}') from None
    return backbone


class CompiledDepths:
    """A compiled tensor forward that serves every depth of an ADN model.

    Call it like the tensor forward (``compiled(x)``); change the depth with
    ``model.backbone.set_skip(...)`` as in eager mode. ``first_call_s`` holds the first
    call of each depth (the compilation is in the first one), ``graphs`` the graphs dynamo
    compiled for all of them.
    """

    def __init__(self, model, backbone, fn, compiled, first_call_s, graphs):
        self.model, self.backbone = model, backbone
        self.fn, self.compiled = fn, compiled
        self.first_call_s: Dict[str, float] = first_call_s
        self.graphs: int = graphs

    def __call__(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)


@torch.no_grad()
def compile_all_depths(model: nn.Module, inputs: torch.Tensor, skips: SkipLike = 'all',
                       fn: Optional[Callable] = None, backend='inductor',
                       **compile_kwargs) -> CompiledDepths:
    """Compile ``model``'s tensor forward in eval mode and run every depth once.

    Args:
        model: a classifier or detector with an ADN backbone that keeps its skip flags as
            tensors (ResNetADN).
        inputs: an input batch of the shape that will be used (a new shape compiles again,
            for every depth at once).
        skips: the depths to warm up, ``'all'`` (default) or e.g. ``'FFFF,TTTT'``.
        fn: what to compile; defaults to the tensor forward (``model(x, mode='tensor')``
            for a classifier, ``model.extract_feat`` for a detector).
        backend, compile_kwargs: given to ``torch.compile`` (``fullgraph=True`` always: a
            graph break raises instead of running part of the model eager). On torch older
            than 2.14 inductor's ``options`` get ``layout_optimization=False`` unless
            ``mode`` or that option is given (see
            :func:`mmadn.utils.torch_compat.inductor_cond_options`).

    Raises:
        RuntimeError: when a depth after the first compiled another graph or dynamo gave
            up on a frame (it would then run eager), naming the depth and the counts.
    """
    if not has_cond():
        raise RuntimeError(f'torch {torch.__version__} has no torch.cond: a compiled graph '
                           'serves one depth there (compile_all_depths needs torch.cond)')
    backbone = dynamic_depth_backbone(model, user='compile_all_depths')
    model.eval()
    fn = tensor_forward(model) if fn is None else fn
    compile_kwargs['fullgraph'] = True
    needed = inductor_cond_options() if backend == 'inductor' else {}
    if needed and 'mode' not in compile_kwargs:  # torch.compile takes mode or options
        compile_kwargs['options'] = {**needed, **(compile_kwargs.get('options') or {})}
    compiled = torch.compile(fn, backend=backend, **compile_kwargs)
    saved = backbone.skip
    first: Dict[str, float] = {}
    try:
        start = dynamo_counts()
        for i, skip in enumerate(resolve_skips(skips, backbone.num_skippable_stages)):
            name = format_skip(skip)
            backbone.set_skip(skip)
            before = dynamo_counts()
            t0 = time.perf_counter()
            compiled(inputs)
            if inputs.is_cuda:
                torch.cuda.synchronize()
            first[name] = time.perf_counter() - t0
            after = dynamo_counts()
            failed = (after['frames'] - after['frames_ok']) - (before['frames'] -
                                                               before['frames_ok'])
            if failed or after['gave_up'] > before['gave_up'] or \
                    (i > 0 and after['graphs'] > before['graphs']):
                raise RuntimeError(
                    f'depth {name} did not run on the graph compiled for the first depth: '
                    f"{after['graphs'] - before['graphs']} new graph(s), {failed} frame(s) "
                    'that dynamo gave up on (they run eager); expected none')
    finally:
        backbone.set_skip(saved)
    return CompiledDepths(model, backbone, fn, compiled, first,
                          dynamo_counts()['graphs'] - start['graphs'])
