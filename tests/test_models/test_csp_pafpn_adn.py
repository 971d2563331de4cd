"""The skippable PAFPN necks (CSPNeXtPAFPNADN, YOLOXPAFPNADN): at full depth the upstream
neck with residual blocks, each flag skips its layer's second half, and inside a detector
the neck's flags follow the backbone's (one skip string for both)."""
import copy

import pytest
import torch
from mmdet.models.necks import YOLOXPAFPN, CSPNeXtPAFPN
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import mmadn  # noqa: F401
from mmadn.models import find_adn_backbone
from mmadn.models.necks import YOLOXPAFPNADN, CSPNeXtPAFPNADN
from .adn_backbone_checks import called_modules, one_thread

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

IN = [16, 32, 64]
LAYERS = ['top_down_blocks.0', 'top_down_blocks.1', 'bottom_up_blocks.0', 'bottom_up_blocks.1']


def _feats(batch=2):
    torch.manual_seed(1)
    return tuple(torch.randn(batch, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate(IN))


@pytest.mark.parametrize('up_cls,adn_cls', [(CSPNeXtPAFPN, CSPNeXtPAFPNADN),
                                            (YOLOXPAFPN, YOLOXPAFPNADN)])
def test_full_depth_is_the_upstream_neck_with_residual_blocks(up_cls, adn_cls):
    torch.manual_seed(0)
    up = up_cls(IN, 16, num_csp_blocks=2)
    up.init_weights()
    for layer in list(up.top_down_blocks) + list(up.bottom_up_blocks):
        for block in layer.blocks:
            assert block.add_identity is False  # mmdet's neck: not residual
            block.add_identity = True
    adn = adn_cls(IN, 16, num_csp_blocks=2)
    adn.load_state_dict(up.state_dict())  # plain keys load, each bn_skip copied
    assert adn.skippable_layers == LAYERS and adn.num_shared_blocks == (1, 1, 1, 1)
    assert adn.skippable_blocks() == [f'{n}.blocks.1' for n in LAYERS]
    up.eval(), adn.eval()
    x = _feats()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(adn(x), up(x)))
        # each flag: its layer runs its shared block only, with the skip norms
        for i, layer in enumerate(LAYERS):
            skip = ''.join('T' if j == i else 'F' for j in range(4))
            with adn.skipping(skip), called_modules(adn) as called:
                adn(x)
            assert f'{layer}.blocks.1' not in called and f'{layer}.blocks.0.conv1.bn_skip' in called
            assert all(f'{o}.blocks.1' in called for o in LAYERS if o != layer)
            assert not any(n.endswith('bn_skip') for n in called if not n.startswith(layer))
    with pytest.raises(ValueError, match=r'within \(1\.\.2, 1\.\.2, 1\.\.2, 1\.\.2\)'):
        adn_cls(IN, 16, num_csp_blocks=2, num_shared_blocks=(1, 1, 1))
    assert adn_cls(IN, 16, num_csp_blocks=1).num_skippable_stages == 0  # RTMDet-s's neck


def _detector(neck_type='CSPNeXtPAFPNADN'):
    init_default_scope('mmdet')
    return MODELS.build(
        dict(
            type='RTMDet', data_preprocessor=dict(type='DetDataPreprocessor'),
            backbone=dict(type='CSPNeXtADN', deepen_factor=0.67,
                          widen_factor=0.125), neck=dict(type=neck_type, in_channels=[32, 64, 128],
                                                         out_channels=16, num_csp_blocks=2),
            bbox_head=dict(
                type='RTMDetSepBNHead', num_classes=4, in_channels=16, feat_channels=16,
                stacked_convs=1, anchor_generator=dict(type='MlvlPointGenerator', offset=0,
                                                       strides=[8, 16, 32]),
                bbox_coder=dict(type='DistancePointBBoxCoder'),
                loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0,
                              loss_weight=1.0), loss_bbox=dict(type='GIoULoss', loss_weight=2.0))))


def test_neck_flags_follow_the_backbone_in_a_detector():
    model = _detector().eval()
    backbone, neck = model.backbone, model.neck
    assert find_adn_backbone(model) is backbone and backbone.adn_neck is neck
    assert backbone.num_skippable_stages == 3 + 4 and backbone.skip_str == 'FFFFFFF'
    assert len(list(backbone.subnet_skips())) == 128
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.extract_feat(x)
        backbone.set_skip('FFFTTTT')  # the backbone whole, every neck layer skipping
        assert neck.skip_str == 'TTTT' and backbone.skip_str == 'FFFTTTT'
        neck_only = model.extract_feat(x)
        with backbone.skipping('base'):
            assert neck.skip_str == 'TTTT' and backbone.skip_str == 'TTTTTTT'
        assert backbone.skip_str == 'FFFTTTT'
        neck.set_skip('super')  # the neck's own switch is what the backbone reports
        assert backbone.skip_str == 'FFFFFFF'
        again = model.extract_feat(x)
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    assert not any(torch.equal(a, b) for a, b in zip(full, neck_only))
    with pytest.raises(ValueError) as err:
        backbone.set_skip('TTF')
    assert "skip='TTF': expected 7 letters" in str(err.value)
    assert "3 for the backbone's stages ['stage1', 'stage2', 'stage3'], then 4 for the neck's " \
        "layers ['top_down_blocks.0'" in str(err.value)
    # the link survives a deep copy (EMA's model copy), to the copy's own neck
    twin = copy.deepcopy(model)
    assert twin.backbone.adn_neck is twin.neck
    twin.backbone.set_skip('base')
    assert neck.skip_str == 'FFFF' and twin.neck.skip_str == 'TTTT'
    # a module that keeps the backbone as its ``backbone`` (a wrapper) leaves the link
    wrapper = torch.nn.Module()
    wrapper.backbone = backbone
    assert backbone.adn_neck is neck
    # replacing the neck by mmdet's unlinks it; the backbone's flags are its own again
    model.neck = MODELS.build(
        dict(type='CSPNeXtPAFPN', in_channels=[32, 64, 128], out_channels=16, num_csp_blocks=2))
    assert backbone.adn_neck is None and backbone.num_skippable_stages == 3
    assert _detector('CSPNeXtPAFPN').backbone.skip_str == 'FFF'


def test_static_export_of_the_neck():
    model = _detector().eval()
    neck = model.neck
    x = _feats(1)
    x = tuple(torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([32, 64, 128]))
    cfg = dict(type='CSPNeXtPAFPNADN', in_channels=[32, 64, 128], out_channels=16, num_csp_blocks=2)
    for skip in ('FFFF', 'TFTF', 'TTTT'):
        static_cfg = neck.static_cfg(cfg, skip)
        static = MODELS.build(static_cfg).eval()
        assert static.num_skippable_stages == 0 and not static.skip_norm_pairs()
        static.load_state_dict(neck.static_state_dict(skip), strict=True)
        assert [
            len(m.blocks) for m in list(static.top_down_blocks) + list(static.bottom_up_blocks)
        ] == [1 if f == 'T' else 2 for f in skip]
        with torch.no_grad(), neck.skipping(skip):
            assert all(torch.equal(a, b) for a, b in zip(neck(x), static(x))), skip
    with pytest.raises(ValueError, match=r'layer_blocks=\[3, 1, 1, 1\]'):
        MODELS.build(dict(cfg, layer_blocks=[3, 1, 1, 1]))
