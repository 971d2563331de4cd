"""Deploy one depth of an ADN model: a plain static model (config + checkpoint) of a chosen
sub-network, and its ONNX export."""
from .onnx_export import export_onnx, onnx_max_abs_diff, run_onnx
from .static_export import (build_model, export_static, export_subnet, exportable_backbone,
                            max_abs_diff, num_params, static_config, tensor_forward)

__all__ = [
    'build_model', 'export_static', 'export_subnet', 'exportable_backbone', 'static_config',
    'tensor_forward', 'max_abs_diff', 'num_params', 'export_onnx', 'run_onnx', 'onnx_max_abs_diff'
]
