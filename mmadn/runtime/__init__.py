"""Choosing the depth while the program runs: a latency-budget controller that moves an
ADN model along its sub-network profile (from :mod:`mmadn.analysis`)."""
from .controller import DepthController, nearest_rank_quantile
from .plot import plot_controller_log

__all__ = ['DepthController', 'nearest_rank_quantile', 'plot_controller_log']
