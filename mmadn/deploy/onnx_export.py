"""ONNX export of a (static) model's tensor forward, checked with onnxruntime on CPU.

What is exported is :func:`~mmadn.deploy.static_export.tensor_forward`: a classifier whole
(input: the normalized image batch, output: ``logits``), a detector's backbone + neck
(outputs ``feat0`` ... one per feature level). The data preprocessor (normalization,
padding) and the detector's heads and post-processing are not part of the graph.
"""
from typing import List, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..utils.torch_compat import onnx_export_has_dynamo
from .static_export import flat_outputs, tensor_forward


class TensorForward(nn.Module):
    """``forward(x)`` -> the flat tuple of output tensors of ``tensor_forward(model)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._fn = tensor_forward(model)

    def forward(self, x):
        return tuple(flat_outputs(self._fn(x)))


def output_names(model: nn.Module, inputs: torch.Tensor) -> List[str]:
    with torch.no_grad():
        outs = TensorForward(model).eval()(inputs)
    return ['logits'] if len(outs) == 1 and outs[0].dim() == 2 else \
        [f'feat{i}' for i in range(len(outs))]


def export_onnx(model: nn.Module, out_file: str, shape: Sequence[int] = (224, 224),
                batch_size: int = 1, opset: int = 18) -> List[str]:
    """Write ``model``'s tensor forward for ``batch_size x 3 x H x W`` inputs to
    ``out_file`` (one self-contained file); returns the output names."""
    if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f'shape={shape!r}: expected two positive integers (H, W)')
    model = model.eval()
    inputs = torch.randn(batch_size, 3, *shape)
    names = output_names(model, inputs)
    kwargs = dict(opset_version=opset, input_names=['input'], output_names=names, verbose=False)
    if onnx_export_has_dynamo():
        kwargs.update(dynamo=True, external_data=False)
    # else (torch < 2.5): the TorchScript exporter, which writes one file as well
    torch.onnx.export(TensorForward(model).eval(), (inputs, ), out_file, **kwargs)
    return names


def run_onnx(onnx_file: str, inputs: torch.Tensor) -> List[np.ndarray]:
    """Run ``onnx_file`` on onnxruntime's CPU provider."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})


@torch.no_grad()
def onnx_max_abs_diff(onnx_file: str, model: nn.Module, inputs: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime and ``model``'s tensor forward."""
    ours = flat_outputs(tensor_forward(model.eval())(inputs))
    theirs = run_onnx(onnx_file, inputs)
    if [tuple(o.shape) for o in ours] != [tuple(o.shape) for o in theirs]:
        raise RuntimeError(f'output shapes differ: torch {[tuple(o.shape) for o in ours]}, '
                           f'onnxruntime {[tuple(o.shape) for o in theirs]}')
    return max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, theirs))
