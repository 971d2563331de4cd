"""FLOPs, parameters and latency of sub-networks (mmengine.analysis underneath), the
choice of a sub-network by budget, and per-block activation maps per sub-network
(Grad-CAM by the grad-cam package, imported when used)."""
from .cam import SubnetMaps, plot_subnet_maps, subnet_maps
from .complexity import (count_active_params, count_flops, register_flop_handles, sdpa_flop_jit,
                         subnet_complexity)
from .profile import (load_accuracy, measure_latency, pareto_front, plot_profile, profile_forward,
                      profile_subnets, save_profile, select_subnet, switch_to_budget)

__all__ = [
    'count_flops', 'count_active_params', 'subnet_complexity', 'sdpa_flop_jit',
    'register_flop_handles', 'profile_forward', 'measure_latency', 'profile_subnets',
    'load_accuracy', 'pareto_front', 'select_subnet', 'switch_to_budget', 'save_profile',
    'plot_profile', 'SubnetMaps', 'subnet_maps', 'plot_subnet_maps'
]
