"""Choosing the depth while the program runs: a latency-budget policy on plain numbers, and
a controller that times an ADN model's calls and switches its depth; ``inferencer``: mmdet's
DetInferencer loading checkpoints strictly (imported from its module, as it imports
mmdet.apis)."""
from .controller import DepthController
from .plot import plot_controller_log
from .policy import DepthPolicy, nearest_rank_quantile

__all__ = ['DepthController', 'DepthPolicy', 'nearest_rank_quantile', 'plot_controller_log']
