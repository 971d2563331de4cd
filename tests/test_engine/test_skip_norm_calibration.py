"""Skip-norm calibration: only the skip norms' running statistics change, to the statistics
of the base-net passes; the hook calibrates inside a real Runner before checkpoints."""
import os.path as osp

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmadn  # noqa: F401
from mmadn.engine.hooks import SkipNormCalibrationHook
from mmadn.models.backbones import ResNetADN
from mmadn.models.layers import calibrate_skip_norms
from ..conftest import DET_DEMO, det_overrides
from .test_subpath_hook import _cfg

STATS = ('running_mean', 'running_var', 'num_batches_tracked')


def _backbone(**kw):
    torch.manual_seed(0)
    bb = ResNetADN(depth=18, norm_eval=True, **kw)
    bb.init_weights()
    with torch.no_grad():  # partner statistics that are not the defaults
        for name, m in bb.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and not name.endswith('_skip'):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    bb.copy_skip_norms_from_partners()
    return bb.train()


def test_only_skip_norm_statistics_change_to_the_base_net_batch_statistics():
    bb = _backbone()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    x = torch.randn(4, 3, 64, 64)
    seen = {}
    handle = bb.layer1[0].bn1_skip.register_forward_pre_hook(
        lambda m, inp: seen.setdefault('x', inp[0].detach().clone()))
    torch.manual_seed(123)
    names = calibrate_skip_norms(bb, [x])
    after_rng = torch.rand(3)
    handle.remove()
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3))  # the random generator is restored
    assert sorted(names) == sorted(s for s, _ in bb.skip_norm_pairs())
    assert len(names) == 8  # one shared block per stage, two norms each

    after = bb.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {f'{n}.{f}' for n in names for f in STATS}
    assert changed == expected  # nothing else moved: weights, partners, stem, ...
    # one batch, momentum=None: the running statistics are that batch's statistics
    inp = seen['x']
    norm = bb.layer1[0].bn1_skip
    assert torch.allclose(norm.running_mean, inp.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(norm.running_var, inp.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert norm.num_batches_tracked.item() == 1
    assert norm.momentum == 0.1  # restored
    # modes and the active depth are restored
    assert bb.training and not bb.layer1[0].bn1.training and not norm.training
    assert bb.skip_str == 'FFFF'


def test_a_partial_skip_calibrates_only_the_stages_it_skips():
    bb = _backbone()
    names = calibrate_skip_norms(bb, [torch.randn(2, 3, 64, 64)] * 2, skips=['TFFT'])
    assert sorted({n.split('.')[0] for n in names}) == ['layer1', 'layer4']
    assert bb.layer4[0].bn2_skip.num_batches_tracked.item() == 2
    assert torch.equal(bb.layer2[0].bn1_skip.running_mean, bb.layer2[0].bn1.running_mean)


def test_calibration_errors_name_the_problem():
    with pytest.raises(ValueError, match='no skip-aware BatchNorm.*skip_aware_norms=False'):
        calibrate_skip_norms(_backbone(skip_aware_norms=False), [torch.randn(1, 3, 32, 32)])
    with pytest.raises(ValueError, match="'TTXF'"):
        calibrate_skip_norms(_backbone(), [torch.randn(1, 3, 32, 32)], skips=['TTXF'])
    with pytest.raises(ValueError, match='no batch reached a skip norm'):
        calibrate_skip_norms(_backbone(), [], skips=['base'])
    with pytest.raises(ValueError, match='num_batches=0'):
        SkipNormCalibrationHook(num_batches=0)


def _train_with_calibration(det_data_root, tmp_path, iters, resume=False):
    """Train the demo detector with a 2-batch SkipNormCalibrationHook, a checkpoint at the
    last iteration; returns the runner and the hook."""
    cfg = _cfg(DET_DEMO, det_overrides(det_data_root, iters=iters), tmp_path)
    # the shipped demo recipe: frozen norm statistics (the partners never move)
    assert cfg.model.backbone.norm_eval
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='SkipNormCalibrationHook', num_batches=2)]
    cfg.default_hooks.checkpoint.interval = iters
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    DefaultScope._instance_dict.clear()
    hook, = [h for h in runner.hooks if isinstance(h, SkipNormCalibrationHook)]
    return runner, hook


def test_hook_calibrates_once_before_training_and_not_on_resume(det_data_root, tmp_path):
    runner, hook = _train_with_calibration(det_data_root, tmp_path, iters=3)
    assert hook.num_calibrations == 1
    state = torch.load(osp.join(str(tmp_path), 'iter_3.pth'))['state_dict']
    model = runner.model
    for skip_name, partner in model.backbone.skip_norm_pairs():
        key = f'backbone.{skip_name}'
        # calibrated on two batches before training, then frozen through the 3 iterations
        assert state[key + '.num_batches_tracked'].item() == 2
        assert torch.equal(state[key + '.running_mean'],
                           model.backbone.get_submodule(skip_name).running_mean)
        # the frozen partner still holds its initial statistics
        assert state[f'backbone.{partner}.running_mean'].abs().sum() == 0
        assert not torch.equal(state[key + '.running_mean'],
                               state[f'backbone.{partner}.running_mean'])

    # resumed for one more iteration: the checkpoint's statistics are kept
    _, hook = _train_with_calibration(det_data_root, tmp_path, iters=4, resume=True)
    assert hook.num_calibrations == 0
    resumed = torch.load(osp.join(str(tmp_path), 'iter_4.pth'))['state_dict']
    for skip_name, _ in model.backbone.skip_norm_pairs():
        for field in STATS:
            key = f'backbone.{skip_name}.{field}'
            assert torch.equal(resumed[key], state[key]), key
