"""The few torch APIs mmadn uses that changed within the supported range (torch 2.1 to
2.14); each helper takes the newer form where it exists."""
import inspect
from typing import Callable

import torch


def register_load_state_dict_pre_hook(module: torch.nn.Module, hook: Callable):
    """``module.register_load_state_dict_pre_hook(hook)``.

    ``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
    unexpected_keys, error_msgs)`` runs before ``module`` loads its part of a state dict.
    torch < 2.2 has only the private ``_register_load_state_dict_pre_hook``, which calls the
    hook the same way when given ``with_module=True``.
    """
    public = getattr(module, 'register_load_state_dict_pre_hook', None)
    if public is not None:
        return public(hook)
    return module._register_load_state_dict_pre_hook(hook, with_module=True)


def onnx_export_has_dynamo() -> bool:
    """Whether ``torch.onnx.export`` takes ``dynamo=`` (torch >= 2.5)."""
    return 'dynamo' in inspect.signature(torch.onnx.export).parameters


def is_compiling() -> bool:
    """Whether torch.compile (dynamo) is tracing the running code (torch >= 2.3 has
    ``torch.compiler.is_compiling``; older torch ``torch._dynamo.is_compiling``)."""
    fn = getattr(torch.compiler, 'is_compiling', None)
    if fn is None:
        fn = getattr(torch._dynamo, 'is_compiling', None)
    return bool(fn()) if fn is not None else False


def is_exporting() -> bool:
    """Whether torch.export is tracing the running code (False on torch without
    ``torch.compiler.is_exporting``)."""
    fn = getattr(torch.compiler, 'is_exporting', None)
    return bool(fn()) if fn is not None else False


def has_cond() -> bool:
    """Whether this torch has ``torch.cond``."""
    return callable(getattr(torch, 'cond', None))


def dynamic_onnx_export_support() -> str:
    """``''`` if this torch can export ``torch.cond`` to an ONNX ``If`` (the dynamo exporter,
    ``torch.onnx.export(..., dynamo=True)``, and ``torch.cond``), else the one line that says
    why not."""
    if onnx_export_has_dynamo() and has_cond() and hasattr(torch.compiler, 'is_exporting'):
        return ''
    return (f'torch {torch.__version__} cannot export the depth as an input (--skip dynamic '
            'needs torch.cond and torch.onnx.export(dynamo=True), torch >= 2.5; tested with '
            '2.14); export one depth per file instead, e.g. --skip TTFF')


def inductor_cond_options(version: str = torch.__version__) -> dict:
    """Inductor options that a graph with ``torch.cond`` needs on this torch.

    torch 2.11's inductor (measured on the CPU) may give a ``torch.cond`` branch its
    operands in the channels-last layout of its layout optimization while the branch was
    compiled for contiguous ones: the first call fails in ``assert_size_stride``. Turning
    the layout optimization off avoids it; torch 2.14 compiles the same graph with it on.
    The versions in between were not measured and get it off too.
    """
    if torch.torch_version.TorchVersion(version) < (2, 14):
        return {'layout_optimization': False}
    return {}
