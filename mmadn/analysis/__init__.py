"""FLOPs, parameters and latency of sub-networks (mmengine.analysis underneath)."""
from .complexity import (count_active_params, count_flops, register_flop_handles,
                         sdpa_flop_jit, subnet_complexity)

__all__ = ['count_flops', 'count_active_params', 'subnet_complexity', 'sdpa_flop_jit',
           'register_flop_handles']
