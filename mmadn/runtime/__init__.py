"""Choosing the depth while the program runs: a latency-budget policy on plain numbers, and
a controller that times an ADN model's calls and switches its depth (of a PyTorch model, or
of an ONNX Runtime session of a dynamic-depth file); ``inferencer``: mmdet's DetInferencer
loading checkpoints strictly (imported from its module, as it imports mmdet.apis)."""
from .controller import DepthController
from .onnx_model import OnnxDepthModel
from .plot import plot_controller_log
from .policy import DepthPolicy, nearest_rank_quantile

__all__ = [
    'DepthController', 'OnnxDepthModel', 'DepthPolicy', 'nearest_rank_quantile',
    'plot_controller_log'
]
