"""Forward hooks that store module outputs while a recording is open."""
import contextlib
from typing import Dict, List, Optional

import torch


class OutputRecorder:
    """Records the outputs of watched modules, by key, inside :meth:`recording` only:
    every call of a watched module appends its output (or the items of a list or tuple
    output) to that key's list."""

    def __init__(self):
        self.handles = []
        self._sink: Optional[Dict[str, List[torch.Tensor]]] = None

    def watch(self, key: str, module: torch.nn.Module) -> None:

        def hook(_module, _inputs, output):
            if self._sink is not None:
                items = output if isinstance(output, (list, tuple)) else [output]
                self._sink.setdefault(key, []).extend(items)

        self.handles.append(module.register_forward_hook(hook))

    @contextlib.contextmanager
    def recording(self):
        """Yields the dict ``key -> [outputs]`` filled while the context is open."""
        self._sink = {}
        try:
            yield self._sink
        finally:
            self._sink = None

    def remove(self) -> None:
        """Remove every forward hook; the modules are as before :meth:`watch`."""
        for h in self.handles:
            h.remove()
        self.handles = []
