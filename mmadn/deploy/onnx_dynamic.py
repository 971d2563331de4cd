"""One ONNX file for every depth: the skip flags are a graph input.

Each stage of the backbone becomes an ONNX ``If`` on ``skip[i]`` whose two branches are
the stage's two sub-paths (shared blocks with their skip norms; shared blocks with their
normal norms plus the skippable blocks), exported from the ``torch.cond`` the stage runs
under ``torch.export``. Every weight is stored once; both branches of a stage read the
shared blocks' convolutions from the outer graph.
"""
import json
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..analysis.profile import profile_forward
from ..models.layers.skip import (ONNX_META_GFLOPS, ONNX_META_SCOPE, ONNX_META_STAGES, format_skip,
                                  resolve_skips)
from ..utils.torch_compat import dynamic_onnx_export_support
from .compile import dynamic_depth_backbone
from .onnx_export import output_names
from .static_export import flat_outputs, tensor_forward


class DynamicDepthForward(nn.Module):
    """``forward(x, skip)``: the model's tensor forward at the depth ``skip`` (a bool
    tensor, one flag per skippable stage) as a flat tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.backbone = dynamic_depth_backbone(model, user='DynamicDepthForward')
        self._fn = tensor_forward(model)

    def forward(self, x, skip):
        with self.backbone.skip_from_tensor(skip):
            return tuple(flat_outputs(self._fn(x)))


def localize_branch_initializers(graph) -> int:
    """Move each initializer that only one branch of an ``If`` reads into that branch
    (recursively) and drop those nothing reads; returns how many moved. The file keeps
    one copy of each.

    ONNX Runtime's CPU layout optimization (NCHWc) converts a branch's convolution only
    when its weight is an initializer of that branch; a weight read from the outer graph
    stays a slower plain-layout convolution.
    """
    from onnx import AttributeProto

    def subgraphs(node):
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                yield a.g
            elif a.type == AttributeProto.GRAPHS:
                yield from a.graphs

    def reads(g) -> set:
        names = set()
        for n in g.node:
            names.update(i for i in n.input if i)
            for sub in subgraphs(n):
                names |= reads(sub)
        return names

    direct = {i for n in graph.node for i in n.input if i} | {o.name for o in graph.output}
    branches = [sub for n in graph.node for sub in subgraphs(n)]
    readers: Dict[str, List[int]] = {}
    for k, branch in enumerate(branches):
        for name in reads(branch):
            readers.setdefault(name, []).append(k)
    keep, moved = [], 0
    for init in graph.initializer:
        where = readers.get(init.name, [])
        if init.name not in direct and not where:
            continue
        if init.name not in direct and len(where) == 1:
            branches[where[0]].initializer.append(init)
            moved += 1
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return moved + sum(localize_branch_initializers(b) for b in branches)


def export_onnx_dynamic(model: nn.Module, out_file: str, shape: Sequence[int] = (224, 224),
                        batch_size: int = 1, opset: int = 18, gflops: Optional[Dict[str,
                                                                                    float]] = None,
                        dynamic_hw: bool = False) -> List[str]:
    """Write ``model``'s tensor forward with the depth as an input: inputs ``input``
    (``batch_size x 3 x H x W``) and ``skip`` (bool, one per skippable stage, ``True`` =
    that stage skips its skippable blocks); outputs as :func:`export_onnx`.

    Args:
        gflops: ``skip string -> GFLOPs`` stored in the file's metadata (with the number of
            skippable stages and the scope), for a run-time controller of the file.
        dynamic_hw: H and W any multiple of 32 instead of ``shape`` (a detector's padded
            images).

    Raises:
        RuntimeError: torch too old to export ``torch.cond`` (one line saying so).
    """
    import onnx
    reason = dynamic_onnx_export_support()
    if reason:
        raise RuntimeError(reason)
    if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f'shape={shape!r}: expected two positive integers (H, W)')
    model = model.eval()
    wrapper = DynamicDepthForward(model).eval()
    backbone = wrapper.backbone
    n = backbone.num_skippable_stages
    inputs = torch.randn(batch_size, 3, *shape)
    names = output_names(model, inputs)
    kwargs = {}
    if dynamic_hw:
        if any(s % 32 for s in shape):
            raise ValueError(f'shape={tuple(shape)!r} with dynamic_hw: expected multiples of 32')
        h = torch.export.Dim('h32', min=1, max=256)
        w = torch.export.Dim('w32', min=1, max=256)
        kwargs['dynamic_shapes'] = ({2: 32 * h, 3: 32 * w}, None)
        if shape[0] == shape[1]:
            # traced at H == W, torch.export would give both one symbol (square inputs only)
            inputs = torch.randn(batch_size, 3, shape[0], shape[1] + 32)
    torch.onnx.export(wrapper, (inputs, torch.zeros(n, dtype=torch.bool)), out_file, dynamo=True,
                      external_data=False, opset_version=opset, input_names=['input', 'skip'],
                      output_names=names, verbose=False, **kwargs)
    proto = onnx.load(out_file)
    localize_branch_initializers(proto.graph)
    meta = {ONNX_META_STAGES: str(n), ONNX_META_SCOPE: profile_forward(model)[1]}
    if gflops:
        meta[ONNX_META_GFLOPS] = json.dumps(gflops)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, out_file)
    return names


@torch.no_grad()
def onnx_dynamic_max_abs_diff(onnx_file: str, model: nn.Module, inputs: torch.Tensor,
                              skips='all') -> Dict[str, float]:
    """Largest absolute difference between onnxruntime (CPU) running the dynamic-depth file
    at each depth and ``model``'s tensor forward at that depth: ``skip -> difference``."""
    import numpy as np
    import onnxruntime as ort
    backbone = dynamic_depth_backbone(model, user='onnx_dynamic_max_abs_diff')
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    fn = tensor_forward(model.eval())
    saved = backbone.skip
    diffs = {}
    try:
        for skip in resolve_skips(skips, backbone.num_skippable_stages):
            backbone.set_skip(skip)
            ours = flat_outputs(fn(inputs))
            theirs = session.run(None, {
                'input': inputs.numpy(),
                'skip': np.array(skip, dtype=bool)
            })
            if [tuple(o.shape) for o in ours] != [tuple(o.shape) for o in theirs]:
                raise RuntimeError(f'{format_skip(skip)}: output shapes differ: torch '
                                   f'{[tuple(o.shape) for o in ours]}, onnxruntime '
                                   f'{[tuple(o.shape) for o in theirs]}')
            diffs[format_skip(skip)] = max(
                float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, theirs))
    finally:
        backbone.set_skip(saved)
    return diffs
