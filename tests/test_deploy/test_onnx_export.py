import re

import onnx
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.deploy import build_model, export_onnx, export_static, onnx_max_abs_diff, run_onnx
from .conftest import load_tool


def test_onnx_tool_exports_the_whole_classifier(cls_ckpt, tmp_path, capsys):
    config, ckpt = cls_ckpt
    out_file = str(tmp_path / 'cls_TTFF.onnx')
    tool = load_tool('tools/deployment/export_onnx.py')
    assert tool.main([config, ckpt, '--skip', 'TTFF', '--out', out_file, '--shape', '64',
                      '64']) == 0
    out = capsys.readouterr().out
    assert 'sub-network TTFF; input 1x3x64x64, outputs logits' in out
    diff = float(re.search(r'max \|onnxruntime - torch\| = (\S+)', out).group(1))
    assert diff < 1e-4
    graph = onnx.load(out_file)
    onnx.checker.check_model(graph)
    # against the adaptive model at TTFF, on another input: same logits
    adaptive, _ = build_model(Config.fromfile(config), ckpt)
    adaptive.backbone.set_skip('TTFF')
    x = torch.randn(1, 3, 64, 64)
    assert onnx_max_abs_diff(out_file, adaptive, x) < 1e-4
    assert run_onnx(out_file, x)[0].shape == (1, 4)
    adaptive.backbone.set_skip('FFFF')  # and the check can tell depths apart
    assert onnx_max_abs_diff(out_file, adaptive, x) > 1e-3


def test_onnx_detector_backbone_and_neck(det_ckpt, tmp_path):
    config, ckpt = det_ckpt
    cfg = Config.fromfile(config)
    adaptive, _ = build_model(cfg, ckpt)
    static_cfg, state = export_static(cfg, adaptive, 'TTTT')
    static, _ = build_model(static_cfg)
    static.load_state_dict(state, strict=True)
    out_file = str(tmp_path / 'det_TTTT.onnx')
    names = export_onnx(static, out_file, shape=(96, 128))
    assert names == ['feat0', 'feat1', 'feat2', 'feat3', 'feat4']
    adaptive.backbone.set_skip('TTTT')
    x = torch.randn(1, 3, 96, 128)
    assert onnx_max_abs_diff(out_file, adaptive, x) < 1e-4
    # the graph holds the convolutions of the sub-network's backbone + neck, no more
    convs = sum(n.op_type == 'Conv' for n in onnx.load(out_file).graph.node)
    expected = sum(
        isinstance(m, torch.nn.Conv2d) for part in (static.backbone, static.neck)
        for m in part.modules())
    assert convs == expected
    assert expected < sum(
        isinstance(m, torch.nn.Conv2d) for part in (adaptive.backbone, adaptive.neck)
        for m in part.modules())
