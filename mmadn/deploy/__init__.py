"""Deploy an ADN model: a plain static model (config + checkpoint) of a chosen
sub-network and its ONNX export; one compiled model and one ONNX file (the depth as an
input) for every depth."""
from .compile import CompiledDepths, compile_all_depths, dynamic_depth_backbone, dynamo_counts
from .onnx_dynamic import (DynamicDepthForward, export_onnx_dynamic, localize_branch_initializers,
                           onnx_dynamic_max_abs_diff)
from .onnx_export import export_onnx, onnx_max_abs_diff, run_onnx
from .static_export import (build_model, export_static, export_subnet, exportable_backbone,
                            max_abs_diff, num_params, static_config, tensor_forward)

__all__ = [
    'build_model', 'export_static', 'export_subnet', 'exportable_backbone', 'static_config',
    'tensor_forward', 'max_abs_diff', 'num_params', 'export_onnx', 'run_onnx', 'onnx_max_abs_diff',
    'compile_all_depths', 'CompiledDepths', 'dynamo_counts', 'dynamic_depth_backbone',
    'export_onnx_dynamic', 'DynamicDepthForward', 'onnx_dynamic_max_abs_diff',
    'localize_branch_initializers'
]
