"""Per-block activation maps per sub-network (mmadn.analysis.cam and
tools/analysis_tools/vis_cam_subnets.py) on the tiny demo classifier and detector."""
import glob
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import mmadn  # noqa: F401
from mmadn.analysis.cam import _finish, load_image, plot_subnet_maps, subnet_maps
from mmadn.engine.launch import load_config
from mmadn.models import build_model
from ..conftest import CLS_DEMO, DET_DEMO, ROOT

TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'vis_cam_subnets.py')
CLASSES = ['circle', 'square', 'triangle', 'star']


def _load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('vis_cam_subnets', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scramble_norms(model, seed=0):
    """Random norm parameters and statistics, each skip-aware norm apart from its partner
    (a fresh model's skip norms are copies of their partners)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


@pytest.fixture(scope='module')
def cls_setup(cls_data_root, tmp_path_factory):
    cfg = load_config(CLS_DEMO)
    torch.manual_seed(0)  # the convolutions' random init
    model, _ = build_model(cfg)
    _scramble_norms(model)
    ckpt = str(tmp_path_factory.mktemp('cam') / 'cls.pth')
    torch.save({
        'state_dict': model.state_dict(),
        'meta': {
            'dataset_meta': {
                'classes': CLASSES
            }
        }
    }, ckpt)
    images = sorted(glob.glob(osp.join(cls_data_root, 'val', '*', '*.png')))
    return cfg, model.eval(), ckpt, images


def test_grid_rows_columns_and_maps_per_subnet(cls_setup, tmp_path):
    cfg, model, _, images = cls_setup
    data = load_image(cfg, images[0])
    res = subnet_maps(model, data, ['FFFF', 'TTFF', 'TTTT'], stage=3, class_names=CLASSES)
    # ResNet-18: layer3 = one shared + one skippable block; maps of the input's size
    assert res.blocks == ['layer3.0', 'layer3.1'] and res.skippable == [False, True]
    size = cv2.imread(images[0]).shape[:2]
    assert res.image.shape == size + (3, ) and res.maps.shape == (3, 2) + size
    assert np.isnan(res.maps[2, 1]).all()  # TTTT skips layer3.1
    ran = res.maps[[0, 0, 1, 1, 2], [0, 1, 0, 1, 0]]
    assert np.isfinite(ran).all() and np.allclose(ran.min(axis=(1, 2)), 0)
    # each map scaled to [0, 1] on its own (a Grad-CAM map with no positive evidence is 0)
    assert all(np.isclose(m.max(), 1) or not m.any() for m in ran)
    # the class explained is the super-net's prediction, for every row
    batch = model.data_preprocessor(data, False)['inputs']
    logits = {}
    for skip in res.skips:
        with model.backbone.skipping(skip), torch.no_grad():
            logits[skip] = model(batch, mode='tensor')[0].softmax(0)
    assert res.target_class == int(logits['FFFF'].argmax())
    for skip, pred in zip(res.skips, res.predictions):
        assert pred['label'] == int(logits[skip].argmax()) == pred['topk'][0][0]
        assert len(pred['topk']) == 3
        assert pred['target_score'] == pytest.approx(float(logits[skip][res.target_class]),
                                                     abs=1e-6)
    # the stage's blocks run differently in FFFF and TTTT (stages 1-3 differ): maps differ
    # (shown on the activation norm, never 0; a random model's Grad-CAM may be 0)
    act = subnet_maps(model, data, ['FFFF', 'TTTT'], stage=3, method='actnorm')
    assert np.abs(act.maps[0, 0] - act.maps[1, 0]).max() > 0.01
    assert model.backbone.skip_str == 'FFFF'  # the depth is restored

    out = str(tmp_path / 'grid.png')
    fig, axes = plot_subnet_maps(res, out)
    assert axes.shape == (3, 4) and len(fig.axes) == 12  # input, 2 blocks, prediction
    assert 'layer3.0' in axes[0, 1].get_title() and 'shared' in axes[0, 1].get_title()
    assert 'skippable' in axes[0, 2].get_title()
    assert [t.get_text() for t in axes[2, 2].texts] == ['skipped']
    assert not axes[1, 2].texts
    assert axes[2, 0].get_ylabel().startswith('TTTT')
    assert fig.get_suptitle().startswith(
        f"Grad-CAM of class '{CLASSES[res.target_class]}' (every row) at the block outputs "
        'of stage 3')
    png = cv2.imread(out)
    w, h = fig.get_size_inches() * fig.dpi
    assert png.shape[:2] == (round(h), round(w))


def test_gradcam_map_is_the_gradient_weighted_activation(cls_setup):
    """The map of a block is ReLU(sum_k mean(d score / d A_k) A_k) of that block's output."""
    cfg, model, _, images = cls_setup
    data = load_image(cfg, images[1])
    res = subnet_maps(model, data, ['TTFF'], blocks=['layer2.0', 'layer3.1'], target_class=2)
    batch = model.data_preprocessor(data, False)['inputs']
    model.backbone.set_skip('TTFF')
    mods = dict(model.backbone.named_modules())
    outs = {}
    handles = [
        mods[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o))
        for n in res.blocks
    ]
    with torch.enable_grad():
        score = model(batch, mode='tensor')[0, 2]
        grads = torch.autograd.grad(score, [outs[n] for n in res.blocks])
    for h in handles:
        h.remove()
    model.backbone.set_skip('FFFF')
    for c, (name, g) in enumerate(zip(res.blocks, grads)):
        act = outs[name].detach()[0]
        cam = torch.relu((g[0].mean(dim=(1, 2))[:, None, None] * act).sum(0)).numpy()
        hw = tuple(batch.shape[-2:])
        assert np.allclose(res.maps[0, c], _finish(cam, hw, hw), atol=1e-4)


def test_what_a_map_depends_on(cls_setup):
    """Activations of stage s depend on the flags of stages 1..s only; Grad-CAM also on the
    later stages (the gradient flows back through them)."""
    cfg, model, _, images = cls_setup
    data = load_image(cfg, images[2])
    act = subnet_maps(model, data, ['TTFF', 'TTFT', 'TTTF'], stage=3, method='actnorm')
    assert act.method == 'actnorm' and act.target_class is None
    assert np.array_equal(act.maps[0], act.maps[1])  # same stages 1..3: identical
    # stage 3 skips in TTTF: its shared block uses its skip-aware norms -> other output
    assert np.abs(act.maps[0, 0] - act.maps[2, 0]).max() > 0.01
    assert np.isnan(act.maps[2, 1]).all()
    cam = subnet_maps(model, data, ['TTFF', 'TTFT'], stage=3)  # TTFF's prediction
    assert cam.maps[0, 0].any() and cam.maps[1, 0].any()
    assert np.abs(cam.maps[0, 0] - cam.maps[1, 0]).max() > 0.05  # stage 4 differs
    first = subnet_maps(model, data, ['FFFF', 'FTTT'], stage=1, method='actnorm')
    assert np.array_equal(first.maps[0, 0], first.maps[1, 0])
    assert np.array_equal(first.maps[0, 1], first.maps[1, 1])


def test_tool_writes_one_figure_per_image(cls_setup, tmp_path):
    _, _, ckpt, images = cls_setup
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for p in images[:2]:
        (folder / osp.basename(p)).write_bytes(open(p, 'rb').read())
    out = tmp_path / 'figs'
    proc = subprocess.run([
        sys.executable, TOOL, CLS_DEMO, ckpt,
        str(folder), '--skips', 'FFFF,TTTT', '--target-class', 'square', '--out',
        str(out)
    ], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(osp.basename(p) for p in glob.glob(str(out / '*_cam.png')))
    assert written == sorted(osp.splitext(osp.basename(p))[0] + '_cam.png' for p in images[:2])
    assert "Grad-CAM of class 'square' at layer3.0, layer3.1" in proc.stdout
    assert proc.stdout.count('  FFFF: predicts') == 2 and 'p(target)' in proc.stdout


def test_bad_input_gets_one_line_errors(cls_setup, tmp_path):
    cfg, _, ckpt, images = cls_setup
    tool = _load_tool()

    def error(*extra, config=CLS_DEMO):
        with pytest.raises(SystemExit) as info:
            tool.main([config, ckpt, images[0], *extra])
        msg = str(info.value)
        assert msg.startswith('error: ') and '\n' not in msg
        return msg

    assert 'stage=5: expected 1..4 (1-based: 3 is layer3' in error('--stage', '5')
    assert 'stage=0: expected 1..4' in error('--stage', '0')
    assert "block 'layer3.7' does not exist: expected block names of this backbone " \
        '(layer1.0..1, layer2.0..1, layer3.0..1, layer4.0..1)' in \
        error('--blocks', 'layer3.0,layer3.7')
    assert "--target-class 'hexagon': expected one of circle, square" in \
        error('--target-class', 'hexagon')
    assert 'target_class=9: expected a class index in 0..3' in error('--target-class', '9')
    assert "skip='TTXF'" in error('--skips', 'FFFF,TTXF')
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = [{CLS_DEMO!r}]\n"
                     "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18))\n")
    assert 'has no ADN backbone (its backbone is ResNet)' in error(config=str(plain))


def test_detector_backbone_gets_the_activation_norm(det_data_root, tmp_path):
    cfg = load_config(DET_DEMO)
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    ckpt = str(tmp_path / 'det.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    image = sorted(glob.glob(osp.join(det_data_root, 'val', '*')))[0]
    tool = _load_tool()
    out = str(tmp_path / 'det.png')
    res, = tool.main(
        [DET_DEMO, ckpt, image, '--skips', 'FFFF,FFTT,TTTT', '--stage', '2', '--out', out])
    assert res.task == 'detector' and res.method == 'actnorm'
    h, w = res.image.shape[:2]
    assert res.maps.shape == (3, 2, h, w) and res.blocks == ['layer2.0', 'layer2.1']
    assert np.array_equal(res.maps[0], res.maps[1])  # FFFF and FFTT agree on stages 1-2
    assert np.isnan(res.maps[2, 1]).all() and np.isfinite(res.maps[:2]).all()
    assert all(len(p['bboxes']) == len(p['scores']) for p in res.predictions)
    fig, axes = plot_subnet_maps(res)
    assert axes.shape == (3, 4)
    assert fig.get_suptitle().startswith(
        'Activation norm (L2 over channels) of the block outputs of stage 2 (a detector: '
        'no class score for Grad-CAM)')
    assert osp.isfile(out)
    with pytest.raises(SystemExit, match='error: --method gradcam needs a class score'):
        tool.main([DET_DEMO, ckpt, image, '--method', 'gradcam'])
