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
