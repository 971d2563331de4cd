"""Every depth in one graph: torch.compile of the demo models (one graph, no recompilation
and no eager fallback while the depth switches), and the dynamic-depth ONNX file (the
depth as an input) against PyTorch at every depth, classifier whole and detector backbone +
neck."""
import re

import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.deploy import (DynamicDepthForward, build_model, compile_all_depths, dynamo_counts,
                          onnx_dynamic_max_abs_diff, tensor_forward)
from mmadn.models.backbones import ResNetADN
from mmadn.models.layers.skip import format_skip
from mmadn.utils.torch_compat import dynamic_onnx_export_support, has_cond, inductor_cond_options
from .conftest import CLS_DEMO, DET_DEMO, randomize_norms


def demo_model(config):
    torch.manual_seed(0)
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    model, _ = build_model(cfg)
    randomize_norms(model)
    return model.eval()


def flat(out):
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in flat(o)]


NO_EXPORT = dynamic_onnx_export_support()
needs_export = pytest.mark.skipif(bool(NO_EXPORT), reason=NO_EXPORT)


@pytest.mark.skipif(not (has_cond() and hasattr(torch.compiler, 'set_stance')),
                    reason='torch.cond and torch.compiler.set_stance needed (newer torch)')
@pytest.mark.parametrize('config,shape', [(CLS_DEMO, (2, 3, 32, 32)), (DET_DEMO, (1, 3, 64, 96))],
                         ids=['classifier', 'detector-backbone-neck'])
@torch.no_grad()
def test_compiled_model_switches_through_every_depth_on_one_graph(config, shape):
    model = demo_model(config)
    backbone = model.backbone
    x = torch.randn(*shape)
    eager = tensor_forward(model)
    skips = list(backbone.subnet_skips())
    expected = {}
    for skip in skips:
        backbone.set_skip(skip)
        expected[skip] = flat(eager(x))
    backbone.set_skip('TFTF')
    torch._dynamo.reset()
    before = dynamo_counts()
    compiled = compile_all_depths(model, x, backend='eager')
    warm = dynamo_counts()
    assert compiled.graphs == warm['graphs'] - before['graphs'] == 1
    assert list(compiled.first_call_s) == [format_skip(s) for s in skips]
    assert backbone.skip_str == 'TFTF'  # the depth it had before the warm-up
    # after the warm-up, every depth in another order: a recompilation would raise
    with torch.compiler.set_stance('fail_on_recompile'):
        for skip in skips[::-1] + skips[5:9]:
            backbone.set_skip(skip)
            out = flat(compiled(x))
            assert max((a - b).abs().max().item() for a, b in zip(out, expected[skip])) < 1e-5
    after = dynamo_counts()
    assert after == warm  # no graph, no frame, no eager fallback since the warm-up
    assert after['frames'] == after['frames_ok'] and after['gave_up'] == before['gave_up']
    # another input shape compiles once more, for every depth at once
    y = torch.cat([x, x])
    compiled(y)
    reshaped = dynamo_counts()
    assert reshaped['graphs'] == after['graphs'] + 1
    for skip in skips:
        backbone.set_skip(skip)
        out = flat(compiled(y))
        assert max((a[:1] - b[:1]).abs().max().item() for a, b in zip(out, expected[skip])) < 1e-5
    assert dynamo_counts() == reshaped
    # the depths really differ, and the eager model still runs the depth set_skip chose
    assert (expected[skips[0]][0] - expected[skips[-1]][0]).abs().max() > 1e-3
    backbone.set_skip(skips[3])
    assert all(torch.equal(a, b) for a, b in zip(flat(eager(x)), expected[skips[3]]))


@needs_export
def test_dynamic_onnx_classifier_equals_torch_at_every_depth(dynamic_cls_onnx):
    onnx_file, config, ckpt, printed = dynamic_cls_onnx
    assert 'every depth; inputs input 1x3x32x32, skip bool[4]; outputs logits' in printed
    tool_diff = float(
        re.search(r'max \|onnxruntime - torch\| over the 16 depths = (\S+)', printed).group(1))
    assert tool_diff < 1e-4
    model, _ = build_model(Config.fromfile(config), ckpt)
    x = torch.randn(1, 3, 32, 32)
    diffs = onnx_dynamic_max_abs_diff(onnx_file, model, x)
    assert len(diffs) == 16 and max(diffs.values()) < 1e-4
    # the depth input matters: onnxruntime at TTTT is far from torch at FFFF
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    base = session.run(None, {'input': x.numpy(), 'skip': np.ones(4, bool)})[0]
    model.backbone.set_skip('FFFF')
    with torch.no_grad():
        assert np.abs(base - model(x, mode='tensor').numpy()).max() > 1e-3
    # one If per stage on the skip input, and one copy of the weights
    graph = onnx.load(onnx_file).graph
    ifs = [n for n in graph.node if n.op_type == 'If']
    assert len(ifs) == 4
    assert [i.name for i in graph.input] == ['input', 'skip']

    def initializer_bytes(g):
        own = sum(onnx.numpy_helper.to_array(t).nbytes for t in g.initializer)
        return own + sum(
            initializer_bytes(a.g) for n in g.node
            for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)

    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert 0.9 * weights < initializer_bytes(graph) <= weights
    # the weights only one branch reads are that branch's (skippable blocks: the full one)
    full = {a.name: a.g for a in ifs[0].attribute}['else_branch']
    assert any('layer1.1.conv1' in t.name for t in full.initializer)
    # onnxruntime folds every BatchNormalization into its convolution, inside the Ifs too
    options = ort.SessionOptions()
    options.optimized_model_filepath = onnx_file[:-5] + '_ort.onnx'
    ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])

    def op_types(g):
        return [n.op_type for n in g.node] + [
            t for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
            for t in op_types(a.g)
        ]

    raw, optimized = op_types(graph), op_types(onnx.load(options.optimized_model_filepath).graph)
    assert raw.count('BatchNormalization') > 0 and optimized.count('If') == 4
    assert 'BatchNormalization' not in optimized


@needs_export
def test_dynamic_onnx_detector_backbone_neck_equals_torch_at_every_depth(dynamic_det_onnx):
    onnx_file, config, ckpt = dynamic_det_onnx
    model, _ = build_model(Config.fromfile(config), ckpt)
    for shape in ((64, 64), (96, 128)):  # exported at 64 x 64, H and W multiples of 32
        diffs = onnx_dynamic_max_abs_diff(onnx_file, model, torch.randn(1, 3, *shape))
        assert len(diffs) == 16 and max(diffs.values()) < 1e-4, (shape, diffs)
    names = [o.name for o in onnx.load(onnx_file).graph.output]
    assert names == ['feat0', 'feat1', 'feat2', 'feat3', 'feat4']


def test_dynamic_depth_needs_tensor_skip_flags():
    from mmpretrain.models import ImageClassifier
    model = ImageClassifier(backbone=dict(type='MobileNetV2ADN', widen_factor=0.25),
                            neck=dict(type='GlobalAveragePooling'))
    with pytest.raises(NotImplementedError, match='MobileNetV2ADN keeps its depth in Python '
                       'state only'):
        DynamicDepthForward(model)
    with pytest.raises(
            ValueError, match=r'skip: a torch.float32 tensor of shape \(4,\); '
            r'expected a bool tensor of shape \(4,\)'):
        with demo_model(CLS_DEMO).backbone.skip_from_tensor(torch.zeros(4)):
            pass


@pytest.mark.skipif(not NO_EXPORT,
                    reason='this torch exports torch.cond; the refusal is for older torch')
def test_old_torch_gets_one_line(cls_ckpt, tmp_path, capsys):
    from .conftest import load_tool
    config, ckpt = cls_ckpt
    code = load_tool('tools/deployment/export_onnx.py').main(
        [config, ckpt, '--skip', 'dynamic', '--out',
         str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f'error: torch {torch.__version__} cannot export the depth')


@pytest.mark.skipif(not has_cond(), reason='torch.cond needed (newer torch)')
def test_training_mode_compiles_one_graph_per_depth():
    """In training mode the norms update their statistics, which a cond branch may not:
    the Python flag is traced, one graph for each depth that runs (super-net, base-net)."""
    torch.manual_seed(0)
    backbone = ResNetADN(depth=18, base_channels=8, stem_channels=8).train()
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    before = dynamo_counts()
    compiled = torch.compile(backbone, backend='eager')
    for skip in ('FFFF', 'TTTT', 'FFFF', 'TTTT'):
        backbone.set_skip(skip)
        out = compiled(x)
        with torch.no_grad():
            assert (out[-1] - backbone(x)[-1]).abs().max() < 1e-5  # batch statistics
    after = dynamo_counts()
    assert after['graphs'] - before['graphs'] == 2 and after['frames'] == after['frames_ok']


@pytest.mark.skipif(not has_cond(), reason='torch.cond needed (newer torch)')
def test_compile_all_depths_refuses_a_forward_that_recompiles_per_depth():
    model = demo_model(CLS_DEMO)
    backbone = model.backbone

    def per_depth(x):  # reads the Python depth: dynamo guards on it, one graph per depth
        scale = 1.0 if backbone.skip_str == 'FFFF' else 2.0
        return model(x, mode='tensor') * scale

    torch._dynamo.reset()
    with pytest.raises(
            RuntimeError, match=r'depth FFFT did not run on the graph compiled for '
            r'the first depth: 1 new graph\(s\), 0 frame\(s\)'):
        compile_all_depths(model, torch.randn(1, 3, 32, 32), fn=per_depth, backend='eager')
    assert backbone.skip_str == 'FFFF'  # the depth it had


def test_inductor_layout_optimization_is_off_for_torch_cond_before_torch_2_14():
    # torch 2.11's inductor fails the first call of a ResNet-ADN torch.cond graph in
    # assert_size_stride with its layout optimization on (tools/gpu_bundle_selftest.sh
    # runs bench_compile there); 2.14 compiles it with the optimization on
    assert inductor_cond_options('2.11.0+cu130') == {'layout_optimization': False}
    assert inductor_cond_options('2.13.1') == {'layout_optimization': False}
    assert inductor_cond_options('2.14.1') == {}
    assert inductor_cond_options('2.15.0.dev20270101') == {}
