"""The controller driving an ONNX Runtime session of the dynamic-depth file: the depth is
the session's ``skip`` input, set through the controller's depth switch. Decisions on
scripted latencies (as the other controller tests), outputs from the real session."""
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.deploy import build_model
from mmadn.runtime import DepthController, OnnxDepthModel
from mmadn.utils.torch_compat import dynamic_onnx_export_support
from .test_controller_models import BUDGET, EXPECTED, SKIPS, ScriptedClock, _latency, _scripted

# the dynamic-depth file needs a torch that exports torch.cond
pytestmark = pytest.mark.skipif(bool(dynamic_onnx_export_support()),
                                reason=dynamic_onnx_export_support() or 'exports')


def test_controller_drives_an_onnx_runtime_session(dynamic_cls_onnx):
    onnx_file, config, ckpt, _ = dynamic_cls_onnx
    session = OnnxDepthModel(onnx_file, threads=1)
    assert session.num_skippable_stages == 4 and session.scope == 'classifier'
    assert sorted(session.gflops) == sorted(f'{a}{b}{c}{d}' for a in 'FT' for b in 'FT'
                                            for c in 'FT' for d in 'FT')
    x = torch.randn(1, 3, 32, 32)
    profile = session.profile(x, skips=SKIPS, repeats=1)
    assert [r['skip'] for r in profile] == SKIPS
    assert all(r['latency_ms'] > 0 and r['scope'] == 'classifier' for r in profile)
    clock = ScriptedClock(session, _latency)  # latencies of the depth the session is at
    ctrl = DepthController(session, _scripted(profile), BUDGET, clock=clock)
    assert ctrl.levels == ['TTTT', 'TTFF', 'FFFF']
    session.set_skip('TTFF')  # the controller sets its own depth before each call
    outs = [ctrl(x)[0] for _ in range(30)]
    assert [c['skip'] for c in ctrl.log] == EXPECTED
    # each call ran the logged depth: the PyTorch model's logits at that depth
    model, _ = build_model(Config.fromfile(config), ckpt)
    expected = {}
    with torch.no_grad():
        for skip in SKIPS:
            model.backbone.set_skip(skip)
            expected[skip] = model(x, mode='tensor')
    for out, call in zip(outs, ctrl.log):
        assert (out - expected[call['skip']]).abs().max() < 1e-4
    assert (expected['FFFF'] - expected['TTTT']).abs().max() > 1e-3
    # numpy in, numpy out; a wrong depth is refused with the accepted form
    assert isinstance(session(x.numpy())[0], np.ndarray)
    with pytest.raises(ValueError, match="skip='TTX': expected 4 letters of T/F"):
        session.set_skip('TTX')


def test_stream_demo_runs_the_backbone_from_the_onnx_file(det_data_root, dynamic_det_onnx, tmp_path,
                                                          capsys):
    onnx_file, config, ckpt = dynamic_det_onnx
    from ..test_deploy.conftest import load_tool
    demo = load_tool('demo/adaptive_depth_stream.py')
    out, log = str(tmp_path / 'stream.png'), str(tmp_path / 'stream.json')
    assert demo.main([
        config, ckpt, det_data_root + '/val', '--budget-ms', '100000', '--skips', 'FFFF,TTTT',
        '--max-frames', '3', '--out', out, '--log', log, '--onnx', onnx_file
    ]) == 0
    text = capsys.readouterr().out
    assert re.search(r'profiled FFFF [\d.]+ ms, TTTT [\d.]+ ms \(backbone\+neck\)', text)
    assert len(re.findall(r'^frame +\d: FFFF', text, re.M)) == 3
    # what the demo does to the detector: extract_feat is the session at its depth
    model, _ = build_model(Config.fromfile(config), ckpt)
    x = torch.randn(1, 3, 96, 64)
    expected = {}
    with torch.no_grad():
        for skip in ('FFFF', 'TFTF', 'TTTT'):
            model.backbone.set_skip(skip)
            expected[skip] = model.extract_feat(x)
    session = demo.onnx_backbone_neck(model, onnx_file)
    for skip in ('TTTT', 'FFFF', 'TFTF'):
        session.set_skip(skip)
        feats = model.extract_feat(x)
        assert max((a - b).abs().max().item() for a, b in zip(feats, expected[skip])) < 1e-4
