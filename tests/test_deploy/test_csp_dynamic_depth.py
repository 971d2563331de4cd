"""RTMDet-ADN with the skippable neck in one compiled graph and one ONNX file: the 2
backbone flags (RTMDet-s's depth) and the 4 neck flags are tensors that set_skip (or the
ONNX input) sets."""
import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.deploy import (build_model, compile_all_depths, dynamo_counts, export_onnx_dynamic,
                          onnx_dynamic_max_abs_diff, tensor_forward)
from mmadn.utils.torch_compat import dynamic_onnx_export_support, has_cond
from ..conftest import ROOT
from .conftest import randomize_norms

DEMO = f'{ROOT}/configs/demo/rtmdet_cspnext_adn_demo.py'
SKIPS = ['FFFFFF', 'TFTFTF', 'FFTTTT', 'TTTTTT']


def _model():
    cfg = Config.fromfile(DEMO)
    cfg.model.neck.type = 'CSPNeXtPAFPNADN'
    cfg.model.backbone.deepen_factor = 0.33  # blocks 1, 2, 2, 1: a smaller graph to trace
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    randomize_norms(model)
    return model.eval()


def _flat(out):
    return [t for o in out for t in (_flat(o) if isinstance(o, (list, tuple)) else [o])]


@pytest.mark.skipif(not (has_cond() and hasattr(torch.compiler, 'set_stance')),
                    reason='torch.cond and torch.compiler.set_stance needed (newer torch)')
@torch.no_grad()
def test_compiled_backbone_and_neck_switch_depth_on_one_graph():
    model = _model()
    backbone = model.backbone
    assert backbone.num_skippable_stages == 6
    x = torch.randn(1, 3, 64, 64)
    eager = tensor_forward(model)
    expected = {}
    for skip in SKIPS:
        backbone.set_skip(skip)
        expected[skip] = _flat(eager(x))
    torch._dynamo.reset()
    before = dynamo_counts()
    compiled = compile_all_depths(model, x, skips=','.join(SKIPS), backend='eager')
    assert compiled.graphs == dynamo_counts()['graphs'] - before['graphs'] == 1
    with torch.compiler.set_stance('fail_on_recompile'):
        for skip in SKIPS[::-1]:
            backbone.set_skip(skip)
            out = _flat(compiled(x))
            assert max((a - b).abs().max().item() for a, b in zip(out, expected[skip])) < 1e-5
    assert (expected['FFFFFF'][0] - expected['FFTTTT'][0]).abs().max() > 1e-3  # neck flags


@pytest.mark.skipif(bool(dynamic_onnx_export_support()), reason=dynamic_onnx_export_support())
def test_dynamic_onnx_of_backbone_and_neck(tmp_path):
    import onnxruntime as ort
    model = _model()
    onnx_file = str(tmp_path / 'rtmdet_dynamic.onnx')
    names = export_onnx_dynamic(model, onnx_file, shape=(64, 64))
    assert names == ['feat0', 'feat1', 'feat2']
    graph = onnx.load(onnx_file).graph
    assert [i.name for i in graph.input] == ['input', 'skip']
    assert sum(n.op_type == 'If' for n in graph.node) == 6  # 2 backbone stages, 4 neck layers
    diffs = onnx_dynamic_max_abs_diff(onnx_file, model, torch.randn(1, 3, 64, 64),
                                      skips=','.join(SKIPS))
    assert list(diffs) == SKIPS and max(diffs.values()) < 1e-4, diffs
    # the file's depths differ where the model's do: the neck flags reach the neck
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    x = np.random.RandomState(0).randn(1, 3, 64, 64).astype(np.float32)
    full, neck_skipped = (session.run(None, {
        'input': x,
        'skip': np.array([c == 'T' for c in s])
    }) for s in ('FFFFFF', 'FFTTTT'))
    assert np.abs(full[0] - neck_skipped[0]).max() > 1e-3
