"""An ONNX Runtime session of a dynamic-depth file with the depth API of an ADN backbone.

The file is the one ``tools/deployment/export_onnx.py --skip dynamic`` (or
:func:`mmadn.deploy.export_onnx_dynamic`) writes: inputs ``input`` and ``skip`` (one bool
per skippable stage). ``set_skip('TTFF')`` changes the ``skip`` the next runs are given;
nothing is reloaded.
"""
import contextlib
import json
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..analysis import measure_latency
from ..models.layers.skip import (ONNX_META_GFLOPS, ONNX_META_SCOPE, ONNX_META_STAGES, SkipLike,
                                  SkipTuple, enumerate_skips, format_skip, parse_skip,
                                  resolve_skips)


class OnnxDepthModel:
    """Run a dynamic-depth ONNX file on ONNX Runtime at a depth chosen at run time.

    Args:
        onnx_file (str): the file (inputs ``input`` and ``skip``).
        providers (Sequence[str]): ONNX Runtime execution providers. Defaults to CPU.
        threads (int, optional): intra-op threads of the session (default: ONNX Runtime's).
        skip: the depth to start at. Defaults to ``'super'``.

    Calling it runs ``input`` (a numpy array or a torch tensor, which is moved to the CPU)
    at the current depth and returns the outputs (numpy arrays, or torch tensors when
    given a tensor).
    """

    def __init__(self, onnx_file: str, providers: Sequence[str] = ('CPUExecutionProvider', ),
                 threads: Optional[int] = None, skip: SkipLike = 'super'):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.onnx_file = onnx_file
        self.session = ort.InferenceSession(onnx_file, options, providers=list(providers))
        names = [i.name for i in self.session.get_inputs()]
        if names != ['input', 'skip']:
            raise ValueError(f'{onnx_file}: inputs {names}; expected a dynamic-depth file '
                             "with inputs ['input', 'skip'] (export_onnx.py --skip dynamic)")
        meta = self.session.get_modelmeta().custom_metadata_map
        shape = self.session.get_inputs()[1].shape
        self.num_skippable_stages = int(meta.get(ONNX_META_STAGES, shape[0]))
        self.scope: Optional[str] = meta.get(ONNX_META_SCOPE)
        self.gflops: Optional[Dict[str, float]] = json.loads(meta[ONNX_META_GFLOPS]) \
            if ONNX_META_GFLOPS in meta else None
        self.output_names: List[str] = [o.name for o in self.session.get_outputs()]
        self._skip: SkipTuple = ()
        self._flags = None
        self.set_skip(skip)

    # the depth API of an ADN backbone ---------------------------------------------------
    @property
    def skip(self) -> SkipTuple:
        return self._skip

    @property
    def skip_str(self) -> str:
        return format_skip(self._skip)

    def set_skip(self, skip: SkipLike) -> 'OnnxDepthModel':
        """The depth of the next runs (the ``skip`` input); nothing is reloaded."""
        self._skip = parse_skip(skip, self.num_skippable_stages)
        self._flags = np.array(self._skip, dtype=bool)
        return self

    @contextlib.contextmanager
    def skipping(self, skip: SkipLike):
        saved = self._skip
        self.set_skip(skip)
        try:
            yield self
        finally:
            self.set_skip(saved)

    def subnet_skips(self) -> Iterator[SkipTuple]:
        return enumerate_skips(self.num_skippable_stages)

    # runs -------------------------------------------------------------------------------
    def __call__(self, inputs):
        as_torch = not isinstance(inputs, np.ndarray)
        array = inputs.detach().cpu().numpy() if as_torch else inputs
        outs = self.session.run(None, {
            'input': np.ascontiguousarray(array, np.float32),
            'skip': self._flags
        })
        if as_torch:
            import torch
            return [torch.from_numpy(o) for o in outs]
        return outs

    def profile(self, inputs, skips='all', warmup: int = 1, repeats: int = 5) -> List[dict]:
        """Rows as :func:`mmadn.analysis.profile_subnets` gives them (``skip``, ``gflops``,
        ``latency_ms``, ``scope``) for a :class:`~mmadn.runtime.DepthController` of this
        session: latencies of this session on ``inputs`` (interleaved, medians), GFLOPs
        from the file (written at export)."""
        if not self.gflops:
            raise ValueError(f'{self.onnx_file} holds no GFLOPs per depth (metadata '
                             f'{ONNX_META_GFLOPS!r}); export it with export_onnx.py --skip '
                             'dynamic, which writes them')
        names = [format_skip(s) for s in resolve_skips(skips, self.num_skippable_stages)]
        saved = self._skip
        try:
            times = measure_latency({s: (lambda: self(inputs))
                                     for s in names}, warmup=warmup, repeats=repeats,
                                    setup=self.set_skip)
        finally:
            self.set_skip(saved)
        scope = {} if self.scope is None else dict(scope=self.scope)
        return [
            dict(skip=s, gflops=float(self.gflops[s]), latency_ms=times[s]['median_ms'], **scope)
            for s in names
        ]
