"""MobileNetV2ADN: layout, GMACs against the authors' table, equivalence with plain mmpretrain
MobileNetV2s, every sub-network forward/backward, frozen stages, one training step with the
hook, the ImageNet config."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmpretrain.models.backbones import MobileNetV2
from mmpretrain.registry import MODELS

import mmadn  # noqa: F401
from mmadn.models.backbones import MobileNetV2ADN
from ..conftest import ROOT
from .adn_backbone_checks import (classifier_train_step_with_hook, flops_g, load_plain_checkpoint,
                                  one_thread, run_every_subnet, skip_norms_in_use,
                                  stage_feature_shapes)

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

TINY = dict(widen_factor=0.25)  # 8..80 channels; run on 32 px inputs
SKIPPABLE = [['layer2.1'], ['layer3.2'], ['layer4.2', 'layer4.3'], ['layer5.2'], ['layer6.2']]


def _classifier(backbone, in_channels=1280, num_classes=1000):
    return MODELS.build(
        dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=in_channels)))


def _skip_norms(*convs):
    """The ``bn_skip`` of each ConvModule named (``layer1.0`` stands for its convs)."""
    return {f'{c}.bn_skip' for c in convs}


@pytest.fixture(scope='module')
def mbv2():
    return _classifier(dict(type='MobileNetV2ADN', widen_factor=1.0))


def test_layout_keys_and_registry(mbv2):
    m = mbv2.backbone
    assert m.num_skippable_stages == 5
    assert m.skippable_stages == ['layer2', 'layer3', 'layer4', 'layer5', 'layer6']
    assert m.skippable_blocks() == sum(SKIPPABLE, [])
    pairs = m.skip_norm_pairs()
    # stem conv, layer1 (2 convs), the kept blocks of the 5 stages (1+2+2+2+2 blocks x 3
    # convs), layer7 (3 convs) and the last 1x1 conv
    assert len(pairs) == 1 + 2 + 9 * 3 + 3 + 1
    assert pairs[0] == ('conv1.bn_skip', 'conv1.bn') and pairs[-1] == ('conv2.bn_skip', 'conv2.bn')
    assert ('layer4.1.conv.2.bn_skip', 'layer4.1.conv.2.bn') in pairs
    plain = set(MobileNetV2().state_dict())
    extra = set(m.state_dict()) - plain
    assert plain <= set(m.state_dict())
    assert extra == {
        f'{s}.{f}'
        for s, _ in pairs
        for f in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    }
    assert MODELS.get('MobileNetV2ADN') is MobileNetV2ADN


def _relu6_outputs(model, skip) -> float:
    """Elements the ReLU6 activations output in one 224 px forward (in G)."""
    sizes = []
    handles = [
        mod.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
        for mod in model.modules() if isinstance(mod, torch.nn.ReLU6)
    ]
    with torch.no_grad(), model.backbone.skipping(skip):
        model(torch.zeros(1, 3, 224, 224), mode='tensor')
    for h in handles:
        h.remove()
    return sum(sizes) / 1e9


def test_gmacs_match_authors_table(mbv2):
    got = {s: flops_g(mbv2, mbv2.backbone, s) for s in ('FFFFF', 'TFFFF', 'TTTTT')}
    # mmadn.analysis (mmengine's convention: convs, linears and BNs): 0.3142 / 0.2147
    assert abs(got['FFFFF'] - 0.32) / 0.32 < 0.02, got
    assert abs(got['TTTTT'] - 0.22) / 0.22 < 0.025, got
    assert got['FFFFF'] > got['TFFFF'] > got['TTTTT']
    # the base-net saves the share of the authors' table: 1 - 0.22 / 0.32
    saved = 1 - got['TTTTT'] / got['FFFFF']
    assert abs(saved - (1 - 0.22 / 0.32)) < 0.01, saved
    # the rest is counting convention: the authors' counter also counts each ReLU6 output
    for skip, ref in (('FFFFF', 0.32), ('TTTTT', 0.22)):
        with_act = got[skip] + _relu6_outputs(mbv2, skip)
        assert abs(with_act - ref) / ref < 0.005, (skip, with_act, ref)


def _perturbed_plain():
    torch.manual_seed(0)
    plain = MobileNetV2(**TINY)
    plain.init_weights()
    with torch.no_grad():  # non-trivial norms, running statistics included
        for name, t in plain.state_dict().items():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn_like(t))
                if name.endswith('running_var'):
                    t.abs_()
    plain.eval()  # (mmpretrain's MobileNetV2.train returns None)
    return plain


def test_plain_checkpoint_loads_super_equals_plain_and_base_equals_kept_blocks(tmp_path):
    plain = _perturbed_plain()
    adn = load_plain_checkpoint(MobileNetV2ADN, plain, tmp_path, **TINY)
    x = torch.randn(2, 3, 32, 32)
    skipped = set(adn.skippable_blocks())
    with torch.no_grad():
        torch.testing.assert_close(adn(x)[0], plain(x)[0], rtol=0, atol=0)
        # the base-net is the plain network through its kept blocks only
        y = plain.conv1(x)
        for name in plain.layers:
            module = getattr(plain, name)
            if name == 'conv2':
                y = module(y)
                continue
            for idx, block in enumerate(module):
                if f'{name}.{idx}' not in skipped:
                    y = block(y)
        with adn.skipping('TTTTT'):
            torch.testing.assert_close(adn(x)[0], y, rtol=0, atol=0)
        assert not torch.allclose(adn(x)[0], y)


def test_every_subnet_forward_backward_and_norm_sets():
    torch.manual_seed(0)
    m = MobileNetV2ADN(**TINY, out_indices=(1, 7))
    m.init_weights()
    x = torch.randn(2, 3, 32, 32)
    outs = run_every_subnet(m, x, SKIPPABLE)
    assert len(outs) == 32
    assert [tuple(o.shape) for o in outs['TTTTT']] == [(2, 8, 8, 8), (2, 1280, 1, 1)]
    assert not torch.allclose(outs['FFFFF'][1], outs['TTTTT'][1])
    # the stem and layer1 follow the first flag, layer7 and conv2 the last one
    assert skip_norms_in_use(m, x,
                             'TFFFF') == _skip_norms('conv1', 'layer1.0.conv.0', 'layer1.0.conv.1',
                                                     *(f'layer2.0.conv.{i}' for i in range(3)))
    assert skip_norms_in_use(m, x, 'FFFFT') == _skip_norms(
        'conv2', *(f'{b}.conv.{i}' for b in ('layer6.0', 'layer6.1', 'layer7.0') for i in range(3)))
    assert stage_feature_shapes(m, x) == [(2, 8, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2), (2, 24, 2, 2),
                                          (2, 40, 1, 1)]


def test_frozen_stages_and_norm_eval_cover_the_skip_norms():
    m = MobileNetV2ADN(**TINY, frozen_stages=2, norm_eval=True)
    assert m.train() is m
    for name in ('conv1', 'layer1', 'layer2'):
        assert not any(p.requires_grad for p in getattr(m, name).parameters())
    assert m.layer3[0].conv[0].bn_skip.weight.requires_grad
    assert not any(mod.training for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))


def test_one_training_step_with_the_hook():
    model = _classifier(dict(type='MobileNetV2ADN', **TINY), num_classes=5)
    model.init_weights()
    log_vars, changed = classifier_train_step_with_hook(model, 5, 32)
    assert log_vars['loss_kd_feat'] > 0 and log_vars['loss_kd_logits'] > 0
    assert {
        'backbone.layer4.3.conv.1.conv.weight', 'backbone.conv1.bn_skip.weight',
        'backbone.conv1.bn.weight', 'backbone.layer4.1.conv.2.bn_skip.weight', 'head.fc.weight'
    } <= changed
    assert model.backbone.skip_str == 'FFFFF'


def test_imagenet_config_builds():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'imagenet', 'mobilenet-v2_adn_8xb32_in1k.py'))
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, MobileNetV2ADN) and model.backbone.skip_str == 'FFFFF'
    assert model.head.fc.out_features == 1000
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('SGD', 0.045, 4e-5)
    assert cfg.param_scheduler.type == 'StepLR' and cfg.param_scheduler.gamma == 0.98
    assert cfg.train_cfg.max_epochs == 300
    hook = cfg.custom_hooks[0]
    assert hook.type == 'SubPathSpecializationHook' and hook.logit_kd.topk == 500
    assert cfg.val_cfg.type == 'SubnetValLoop'


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='TTFF'):
        MobileNetV2ADN(**TINY, skip='TTFF')
