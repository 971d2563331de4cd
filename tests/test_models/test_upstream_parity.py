"""Each ADN backbone against its upstream class, built from the same registry with the same
arguments (the options the upstream tests exercise): the same signature (upstream arguments
in their order with their defaults, the ADN ones keyword-only after them), the same
reported attributes, the same initial weights, train/eval and requires_grad states, and at
the super-net the same outputs, gradients and BatchNorm statistics; the same errors for bad
values. ``with_cp`` checkpoints and stays exact over the two passes of a training step."""
import copy
import inspect

import pytest
import torch
from mmdet.models.backbones import CSPDarknet, CSPNeXt
from mmdet.models.backbones import ResNet as MMDetResNet
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.logging import MMLogger
from mmpretrain.models.backbones import MobileNetV2
from mmpretrain.models.backbones import ResNet as MMPretrainResNet
from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmadn  # noqa: F401
from mmadn.models.backbones import (CSPDarknetADN, CSPNeXtADN, MobileNetV2ADN, ResNetADN,
                                    SwinTransformerADN, VisionTransformerADN, mmpretrain_resnet)
from .adn_backbone_checks import one_thread

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

REGISTRIES = {'mmdet': MMDET_MODELS, 'mmpretrain': MMPRETRAIN_MODELS}
#: (registry, type) -> (ADN class, upstream class)
CLASSES = {
    ('mmdet', 'ResNetADN'): (ResNetADN, MMDetResNet),
    ('mmpretrain', 'ResNetADN'): (mmpretrain_resnet.ResNetADN, MMPretrainResNet),
    ('mmpretrain', 'MobileNetV2ADN'): (MobileNetV2ADN, MobileNetV2),
    ('mmpretrain', 'SwinTransformerADN'): (SwinTransformerADN, SwinTransformer),
    ('mmdet', 'SwinTransformerADN'): (SwinTransformerADN, SwinTransformer),
    ('mmpretrain', 'VisionTransformerADN'): (VisionTransformerADN, VisionTransformer),
    ('mmdet', 'CSPNeXtADN'): (CSPNeXtADN, CSPNeXt),
    ('mmdet', 'CSPDarknetADN'): (CSPDarknetADN, CSPDarknet),
}
ADN_ARGS = {
    ResNetADN: ['num_shared_blocks', 'skip', 'skip_aware_norms'],
    mmpretrain_resnet.ResNetADN: ['num_shared_blocks', 'skip', 'skip_aware_norms'],
    MobileNetV2ADN: ['skip'],
    SwinTransformerADN: ['num_shared_blocks', 'skip'],
    VisionTransformerADN: ['skip'],
    CSPNeXtADN: ['skip', 'num_shared_blocks', 'skip_aware_norms'],
    CSPDarknetADN: ['skip', 'num_shared_blocks', 'skip_aware_norms'],
}

SWIN = dict(arch=dict(embed_dims=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 1, 1]), img_size=64,
            window_size=2)
VIT = dict(arch=dict(embed_dims=16, num_layers=8, num_heads=2, feedforward_channels=32),
           img_size=32, patch_size=8)
CONTEXT = dict(cfg=dict(type='ContextBlock', ratio=1. / 4), stages=(False, True, True, False),
               position='after_conv3')
NONLOCAL = dict(cfg=dict(type='NonLocal2d'), position='after_conv2')
ATTENTION = dict(
    cfg=dict(type='GeneralizedAttention', spatial_range=-1, num_heads=2, attention_type='0010',
             kv_stride=2), stages=(False, True, True, True), position='after_conv2')
DCN = dict(type='DCN', deform_groups=1, fallback_on_stride=False)

# (id, registry, type, upstream arguments, input size)
CASES = [
    ('det-r18-defaults', 'mmdet', 'ResNetADN', dict(depth=18, base_channels=8), 32),
    ('det-r50-norm_eval-False-frozen', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=4, norm_eval=False, frozen_stages=1), 32),
    ('det-r50-v1d-frozen', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=4, deep_stem=True, avg_down=True, frozen_stages=1,
          norm_eval=False), 32),
    ('det-r50-stem-channels', 'mmdet', 'ResNetADN',
     dict(depth=50, stem_channels=6, base_channels=2, norm_eval=False), 32),
    ('det-r50-gn-out012', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=4, out_indices=(0, 1, 2),
          norm_cfg=dict(type='GN', num_groups=2, requires_grad=True)), 32),
    ('det-r50-with_cp', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=4, with_cp=True, norm_eval=False), 32),
    ('det-r50-plugins', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=8, plugins=[ATTENTION, NONLOCAL, CONTEXT], norm_eval=False), 32),
    ('det-r50-dcn-caffe', 'mmdet', 'ResNetADN',
     dict(depth=50, base_channels=4, dcn=DCN, stage_with_dcn=(False, True, True, False),
          style='caffe', norm_eval=False), 64),
    ('det-r18-no-zero-init-3-stages', 'mmdet', 'ResNetADN',
     dict(depth=18, base_channels=8, zero_init_residual=False, num_stages=3, strides=(1, 2, 2),
          dilations=(1, 1, 2), out_indices=(0, 1, 2)), 32),
    ('cls-r18-defaults', 'mmpretrain', 'ResNetADN', dict(depth=18, stem_channels=8,
                                                         base_channels=8), 32),
    ('cls-r50-norm_eval-frozen', 'mmpretrain', 'ResNetADN',
     dict(depth=50, stem_channels=8, base_channels=4, norm_eval=True, frozen_stages=1), 32),
    ('cls-r50-v1d-frozen', 'mmpretrain', 'ResNetADN',
     dict(depth=50, stem_channels=8, base_channels=4, deep_stem=True, avg_down=True,
          frozen_stages=1, out_indices=(0, 1, 2, 3)), 32),
    ('cls-r50-expansion-drop_path', 'mmpretrain', 'ResNetADN',
     dict(depth=50, stem_channels=8, base_channels=8, expansion=2, drop_path_rate=0.5), 32),
    ('cls-r50-with_cp-half-width', 'mmpretrain', 'ResNetADN',
     dict(depth=50, base_channels=2, with_cp=True, out_indices=(0, 1, 2, 3)), 32),
    ('cls-r18-no-zero-init', 'mmpretrain', 'ResNetADN',
     dict(depth=18, stem_channels=8, base_channels=8, zero_init_residual=False), 32),
    ('mbv2-defaults', 'mmpretrain', 'MobileNetV2ADN', dict(widen_factor=0.25), 32),
    ('mbv2-frozen-all-outs', 'mmpretrain', 'MobileNetV2ADN',
     dict(widen_factor=0.25, frozen_stages=2, out_indices=tuple(range(8))), 32),
    ('mbv2-norm_eval-relu-with_cp', 'mmpretrain', 'MobileNetV2ADN',
     dict(widen_factor=0.25, norm_eval=True, act_cfg=dict(type='ReLU'), with_cp=True), 32),
    ('mbv2-gn', 'mmpretrain', 'MobileNetV2ADN',
     dict(widen_factor=0.25, norm_cfg=dict(type='GN', num_groups=2, requires_grad=True),
          out_indices=(0, 2, 4)), 32),
    ('swin-defaults', 'mmpretrain', 'SwinTransformerADN', dict(SWIN), 64),
    ('swin-det-registry', 'mmdet', 'SwinTransformerADN', dict(SWIN, out_indices=(0, 1, 2, 3)), 64),
    ('swin-frozen-drop_path-abs-pos', 'mmpretrain', 'SwinTransformerADN',
     dict(SWIN, frozen_stages=1, out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
          use_abs_pos_embed=True), 64),
    ('swin-after-downsample-with_cp', 'mmpretrain', 'SwinTransformerADN',
     dict(SWIN, out_after_downsample=True, out_indices=(0, 1, 2), with_cp=True), 64),
    ('swin-pad-small-map', 'mmpretrain', 'SwinTransformerADN',
     dict(SWIN, window_size=3, pad_small_map=True), 64),
    ('vit-defaults', 'mmpretrain', 'VisionTransformerADN', dict(VIT), 32),
    ('vit-featmap-frozen-outs', 'mmpretrain', 'VisionTransformerADN',
     dict(VIT, out_type='featmap', frozen_stages=2, out_indices=[-3, -2, -1],
          drop_path_rate=0.2), 32),
    ('vit-avg-no-cls-pre-norm', 'mmpretrain', 'VisionTransformerADN',
     dict(VIT, out_type='avg_featmap', with_cls_token=False, pre_norm=True, final_norm=False), 32),
    ('cspnext-defaults', 'mmdet', 'CSPNeXtADN', dict(deepen_factor=0.67, widen_factor=0.125), 64),
    ('cspnext-frozen-norm_eval-depthwise-outs', 'mmdet', 'CSPNeXtADN',
     dict(deepen_factor=0.67, widen_factor=0.125, frozen_stages=2, norm_eval=True,
          use_depthwise=True, out_indices=(1, 2, 3, 4)), 64),
    ('cspnext-no-attention-expand-gn', 'mmdet', 'CSPNeXtADN',
     dict(deepen_factor=0.33, widen_factor=0.25, channel_attention=False, expand_ratio=0.25,
          norm_cfg=dict(type='GN', num_groups=2, requires_grad=True)), 64),
    ('cspdarknet-defaults', 'mmdet', 'CSPDarknetADN', dict(deepen_factor=0.33,
                                                           widen_factor=0.125), 64),
    ('cspdarknet-frozen-depthwise-p6', 'mmdet', 'CSPDarknetADN',
     dict(arch='P6', deepen_factor=0.33, widen_factor=0.125, frozen_stages=1, use_depthwise=True,
          out_indices=(2, 3, 4, 5)), 64),
]


@pytest.fixture(scope='module', autouse=True)
def quiet_init_log():
    """init_weights logs every parameter at INFO level; the current logger drops it."""
    MMLogger.get_instance('mmadn_test_parity', log_level='WARNING')


def _build(registry, type_, kwargs):
    return REGISTRIES[registry].build(dict(type=type_, **copy.deepcopy(kwargs)))


def _pair(registry, type_, kwargs):
    """The ADN backbone and its upstream, built alike from the same seeds."""
    upstream_cls = CLASSES[registry, type_][1]
    torch.manual_seed(0)
    upstream = upstream_cls(**copy.deepcopy(kwargs))
    torch.manual_seed(0)
    adn = _build(registry, type_, kwargs)
    return adn, upstream


def _randomize_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, (_BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


def _plain(value):
    return value is None or isinstance(value, (bool, int, float, str, tuple, list, dict))


@pytest.mark.parametrize('key', list(CLASSES), ids=[f'{r}-{t}' for r, t in CLASSES])
def test_signature_is_the_upstream_one_then_the_adn_arguments(key):
    adn_cls, upstream_cls = CLASSES[key]
    upstream = list(inspect.signature(upstream_cls).parameters.values())
    params = list(inspect.signature(adn_cls).parameters.values())
    assert params[:len(upstream)] == upstream  # names, order, kinds, defaults
    adn = params[len(upstream):]
    assert [p.name for p in adn] == ADN_ARGS[adn_cls]
    assert all(p.kind is p.KEYWORD_ONLY for p in adn)


@pytest.mark.parametrize('name, registry, type_, kwargs, size', CASES, ids=[c[0] for c in CASES])
def test_super_net_is_the_upstream_backbone(name, registry, type_, kwargs, size):
    adn, upstream = _pair(registry, type_, kwargs)
    adn_cls = CLASSES[registry, type_][0]
    assert type(adn) is adn_cls
    # the attributes that the upstream modules report (this registry's defaults included)
    modules = dict(adn.named_modules())
    for n, m in upstream.named_modules():
        reported = {k: v for k, v in vars(m).items() if not k.startswith('_') and _plain(v)}
        assert {k: getattr(modules[n], k) for k in reported} == reported, n
    # the same initial weights; each skip norm a copy of its partner
    torch.manual_seed(1)
    upstream.init_weights()
    torch.manual_seed(1)
    adn.init_weights()
    adn_state = adn.state_dict()
    for key, value in upstream.state_dict().items():
        assert torch.equal(adn_state[key], value), key
    pairs = adn.skip_norm_pairs()
    assert pairs
    for skip_name, partner in pairs:
        for k, v in adn.get_submodule(partner).state_dict().items():
            assert torch.equal(adn.get_submodule(skip_name).state_dict()[k], v)
    # the same weights, norms that matter
    _randomize_norms(upstream)
    upstream_state = copy.deepcopy(upstream.state_dict())
    adn.load_state_dict(upstream_state, strict=True)
    # train/eval and requires_grad, each skip norm as its partner
    for mode in (True, False):
        assert adn.train(mode) is adn
        upstream.train(mode)
        modules = dict(adn.named_modules())
        for n, m in upstream.named_modules():
            assert modules[n].training == m.training, (mode, n)
        for s, p in pairs:
            assert modules[s].training == modules[p].training, (mode, s)
    params = dict(adn.named_parameters())
    for n, p in upstream.named_parameters():
        assert params[n].requires_grad == p.requires_grad, n
    for s, p in pairs:
        assert [q.requires_grad for q in modules[s].parameters()] == \
            [q.requires_grad for q in modules[p].parameters()], s
    # outputs, gradients and BatchNorm statistics in training, outputs in eval
    x = torch.randn(2, 3, size, size)
    upstream.train()
    updates_statistics = any(m.training for m in upstream.modules() if isinstance(m, _BatchNorm))
    reference = _train_and_eval_step(upstream, x)
    adn_outs, adn_grads, adn_buffers, adn_evals = _train_and_eval_step(adn, x)
    if kwargs.get('with_cp'):
        # The upstream blocks checkpoint reentrantly: their recomputation in backward
        # updates the BatchNorm statistics a second time, and the gradients differ from
        # the plain ones by rounding. The ADN blocks are exactly the plain upstream.
        for a, b in zip(adn_outs, reference[0]):
            assert torch.equal(a, b)
        plain = CLASSES[registry, type_][1](**dict(copy.deepcopy(kwargs), with_cp=False))
        plain.load_state_dict(upstream_state)
        upstream_buffers, reference = reference[2], _train_and_eval_step(plain, x)
        twice = [n for n, b in reference[2].items() if not torch.equal(upstream_buffers[n], b)]
        assert bool(twice) == updates_statistics
    outs, grads, buffers, evals = reference
    assert len(adn_outs) == len(outs) and len(adn_evals) == len(evals)
    for a, b in zip(adn_outs + adn_evals, outs + evals):
        assert torch.equal(a, b)
    for n, g in grads.items():
        assert (adn_grads[n] is None) == (g is None), n
        if g is not None:
            torch.testing.assert_close(adn_grads[n], g, rtol=1e-5, atol=1e-7, msg=n)
    for n, b in buffers.items():
        assert torch.equal(adn_buffers[n], b), n


def _train_and_eval_step(model, x):
    """Outputs, gradients and buffers of a training forward/backward, then eval outputs."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(2)  # drop path draws the same masks
    outs = _tensors(model(x))
    sum(o.float().pow(2).mean() for o in outs).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        evals = _tensors(model(x))
    return [o.detach() for o in outs], grads, buffers, evals


def test_positional_arguments_keep_their_upstream_meaning():
    cases = [  # ResNet: depth, in_channels, stem_channels, base_channels (, expansion), ...
        (ResNetADN, MMDetResNet, (50, 3, 6, 2), 32),
        (mmpretrain_resnet.ResNetADN, MMPretrainResNet, (50, 3, 8, 8, 2), 32),
        (MobileNetV2ADN, MobileNetV2, (0.25, (2, 7), 1), 32),
        (SwinTransformerADN, SwinTransformer, (SWIN['arch'], 64, 4, 3, 2), 64),
        (VisionTransformerADN, VisionTransformer, (VIT['arch'], 32, 8), 32),
        (CSPNeXtADN, CSPNeXt, ('P5', 0.67, 0.125, (1, 2, 3), 1), 64),
        (CSPDarknetADN, CSPDarknet, ('P5', 0.33, 0.125, (2, 3)), 64),
    ]
    for adn_cls, upstream_cls, args, size in cases:
        adn, upstream = adn_cls(*args), upstream_cls(*args)
        adn.eval(), upstream.eval()
        shapes = {k: v.shape for k, v in adn.state_dict().items()}
        assert {k: v.shape for k, v in upstream.state_dict().items()}.items() <= shapes.items()
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            assert [o.shape for o in _tensors(adn(x))] == [o.shape for o in _tensors(upstream(x))]


def _saved_tensors(model, x):
    """How many tensors autograd keeps for backward outside checkpointed blocks."""
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _tensors(model(x))
    return out, count[0]


WITH_CP = [
    ('mmdet', 'ResNetADN', dict(depth=18, base_channels=8, norm_eval=False), 32),
    ('mmpretrain', 'ResNetADN', dict(depth=50, stem_channels=8, base_channels=4,
                                     drop_path_rate=0.3), 32),
    ('mmpretrain', 'MobileNetV2ADN', dict(widen_factor=0.25), 32),
    ('mmpretrain', 'SwinTransformerADN', dict(SWIN, drop_path_rate=0.3), 64),
]


@pytest.mark.parametrize('registry, type_, kwargs, size', WITH_CP,
                         ids=[f'{r}-{t}' for r, t, _, _ in WITH_CP])
def test_with_cp_checkpoints_and_is_exact_over_two_passes(registry, type_, kwargs, size):
    """The super-net and the base-net in one step, one backward after both (the base pass
    is recomputed after the super-net's norm set is back): the gradients and BatchNorm
    statistics of a checkpointed model are those of one without checkpointing."""
    torch.manual_seed(0)
    ref = _build(registry, type_, kwargs)
    ref.init_weights()
    _randomize_norms(ref)
    cp = _build(registry, type_, dict(kwargs, with_cp=True))
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, size, size)
    saved = []
    for model in (ref, cp):
        model.train()
        torch.manual_seed(1)
        with model.skipping('super'):
            outs, count = _saved_tensors(model, x)
            loss = sum(o.pow(2).mean() for o in outs)
        with model.skipping('base'):
            loss = loss + sum(o.pow(2).mean() for o in _tensors(model(x)))
        loss.backward()
        saved.append(count)
    assert saved[1] < saved[0] / 2  # the blocks' activations are recomputed, not kept
    assert sum(getattr(m, 'with_cp', False) is True for m in cp.modules()) >= 8
    for (n, p), (_, q) in zip(ref.named_parameters(), cp.named_parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
    for (n, b), (_, c) in zip(ref.named_buffers(), cp.named_buffers()):
        assert torch.equal(b, c), n  # updated once per pass, not again in backward


# (registry, type, bad arguments): the upstream raises, the ADN class raises the same
ERRORS = [
    ('mmdet', 'ResNetADN', dict(depth=20)),
    ('mmdet', 'ResNetADN', dict(depth=50, num_stages=0)),
    ('mmdet', 'ResNetADN', dict(depth=50, num_stages=5)),
    ('mmdet', 'ResNetADN', dict(depth=50, dcn=DCN, stage_with_dcn=(True, ))),
    ('mmdet', 'ResNetADN', dict(depth=50, plugins=[dict(CONTEXT, stages=(False, True, True))])),
    ('mmdet', 'ResNetADN', dict(depth=50, strides=(1, ), dilations=(1, 1), num_stages=3)),
    ('mmdet', 'ResNetADN', dict(depth=50, pretrained=0)),
    ('mmdet', 'ResNetADN', dict(depth=50, style='tensorflow')),
    ('mmdet', 'ResNetADN', dict(depth=18, dcn=DCN, stage_with_dcn=(False, True, True, True))),
    ('mmpretrain', 'ResNetADN', dict(depth=20)),
    ('mmpretrain', 'ResNetADN', dict(depth=50, num_stages=5)),
    ('mmpretrain', 'ResNetADN', dict(depth=50, strides=(1, ), dilations=(1, 1), num_stages=3)),
    ('mmpretrain', 'ResNetADN', dict(depth=50, style='tensorflow')),
    ('mmpretrain', 'ResNetADN', dict(depth=50, expansion='4')),
    ('mmpretrain', 'MobileNetV2ADN', dict(frozen_stages=8)),
    ('mmpretrain', 'MobileNetV2ADN', dict(out_indices=[8])),
    ('mmpretrain', 'SwinTransformerADN', dict(arch='unknown')),
    ('mmdet', 'SwinTransformerADN', dict(arch=dict(embed_dims=96, depths=[2, 2, 18, 2]))),
    ('mmpretrain', 'VisionTransformerADN', dict(arch='unknown')),
    ('mmpretrain', 'VisionTransformerADN', dict(VIT, out_indices={1: 1})),
    ('mmpretrain', 'VisionTransformerADN', dict(VIT, out_indices=[0, 13])),
    ('mmpretrain', 'VisionTransformerADN', dict(VIT, out_type='tokens')),
    ('mmpretrain', 'VisionTransformerADN', dict(VIT, with_cls_token=False)),
    ('mmdet', 'CSPNeXtADN', dict(arch='P7')),
    ('mmdet', 'CSPNeXtADN', dict(widen_factor=0.125, frozen_stages=9)),
    ('mmdet', 'CSPNeXtADN', dict(widen_factor=0.125, out_indices=(7, ))),
    ('mmdet', 'CSPDarknetADN', dict(arch='P7')),
    ('mmdet', 'CSPDarknetADN', dict(widen_factor=0.125, frozen_stages=-2)),
]


@pytest.mark.parametrize('registry, type_, kwargs', ERRORS,
                         ids=[f'{r}-{t}-{"-".join(map(str, k))}' for r, t, k in ERRORS])
def test_bad_values_raise_the_upstream_errors(registry, type_, kwargs):
    upstream_cls = CLASSES[registry, type_][1]
    with pytest.raises(Exception) as upstream_err:
        upstream_cls(**copy.deepcopy(kwargs))
    with pytest.raises(Exception) as adn_err:
        _build(registry, type_, kwargs)
    assert type(adn_err.value) is type(upstream_err.value)
    # the registry puts the class name in front of the upstream message
    assert str(upstream_err.value) in str(adn_err.value)
