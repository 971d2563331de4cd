import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.analysis import count_active_params
from mmadn.deploy import (build_model, export_static, export_subnet, exportable_backbone,
                          max_abs_diff, num_params, tensor_forward)
from mmadn.models.layers import AdaptiveDepthMixin
from .conftest import load_tool, randomize_norms


def test_static_state_dict_moves_the_skip_norms_of_skipping_stages_only():
    adn = MMDET_MODELS.build(dict(type='ResNetADN', depth=18))
    randomize_norms(adn)
    state = adn.static_state_dict('TFFF')
    plain = MMDET_MODELS.build(adn.static_cfg(dict(type='ResNetADN', depth=18), 'TFFF'))
    assert plain.stage_block_counts == (1, 2, 2, 2)
    assert set(state) == set(plain.state_dict())  # no skipped block, no *_skip key left
    full = adn.state_dict()
    # stage 1 skips: its shared block's norms are the skip-aware ones
    assert torch.equal(state['layer1.0.bn1.running_var'], full['layer1.0.bn1_skip.running_var'])
    assert not torch.equal(state['layer1.0.bn1.running_var'], full['layer1.0.bn1.running_var'])
    # stage 2 runs all blocks: the ordinary norms stay
    assert torch.equal(state['layer2.0.bn2.weight'], full['layer2.0.bn2.weight'])
    assert torch.equal(state['layer2.1.conv1.weight'], full['layer2.1.conv1.weight'])


def test_static_cfg_keeps_resnet_arguments_and_drops_adn_ones():
    cfg = dict(type='mmdet.ResNetADN', depth=50, num_shared_blocks=(1, 2, 3, 2), skip='TTTT',
               out_indices=(1, 3), frozen_stages=1, avg_down=True,
               init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))
    adn = MMDET_MODELS.build(cfg)
    static = adn.static_cfg(cfg)  # the active skip: TTTT
    assert static == dict(type='mmdet.StageResNet', depth=50, stage_blocks=(1, 2, 3, 2),
                          out_indices=(1, 3), frozen_stages=1, avg_down=True, norm_eval=True,
                          init_cfg=None)
    assert adn.static_cfg(cfg, 'FTFF')['stage_blocks'] == (3, 2, 6, 3)


@pytest.mark.parametrize('skip', ['TTFF', 'TFTF', 'TTTT'])
def test_exported_classifier_equals_the_sub_network(cls_ckpt, tmp_path, skip):
    config, ckpt = cls_ckpt
    result = export_subnet(config, ckpt, skip, str(tmp_path))
    adaptive = result['adaptive_model']
    static_cfg = Config.fromfile(result['config'])  # as a user loads it
    assert static_cfg.model.backbone.type == 'StageResNet'
    assert 'ResNetADN' not in open(result['config']).read()
    assert static_cfg.custom_hooks == [] and static_cfg.val_cfg.type == 'ValLoop'
    static, meta = build_model(static_cfg, result['checkpoint'])  # strict load
    assert meta['dataset_meta']['classes'][0] == 'circle'
    assert meta['adn_export']['skip'] == skip
    x = torch.randn(2, 3, 64, 64)
    with adaptive.backbone.skipping(skip):
        assert max_abs_diff(adaptive, static, x) < 1e-5
        active = count_active_params(adaptive, x, tensor_forward(adaptive))
    assert num_params(static) == active < num_params(adaptive)
    # another depth gives other logits: the comparison can tell depths apart
    with adaptive.backbone.skipping('FFFF'):
        assert max_abs_diff(adaptive, static, x) > 1e-3


def test_export_subnet_tool_detector(det_ckpt, tmp_path, capsys):
    config, ckpt = det_ckpt
    tool = load_tool('tools/deployment/export_subnet.py')
    assert tool.main(
        [config, ckpt, '--skip', 'TTFF', '--out',
         str(tmp_path), '--shape', '96', '128']) == 0
    out = capsys.readouterr().out
    assert 'exported sub-network TTFF: stage blocks (1, 1, 2, 2)' in out
    assert 'max |static - adaptive(TTFF)| = 0' in out
    static_cfg = Config.fromfile(tmp_path / 'mask_rcnn_r18_adn_fpn_demo_TTFF.py')
    assert static_cfg.default_hooks.checkpoint.save_best == 'coco/bbox_mAP'
    static, _ = build_model(static_cfg, str(tmp_path / 'mask_rcnn_r18_adn_fpn_demo_TTFF.pth'))
    adaptive, _ = build_model(Config.fromfile(config), ckpt)
    x = torch.randn(1, 3, 96, 128)
    with adaptive.backbone.skipping('TTFF'):
        assert max_abs_diff(adaptive, static, x) < 1e-5
        active_backbone = count_active_params(adaptive.backbone, x)
    assert num_params(static.backbone) == active_backbone
    assert num_params(static) == (num_params(adaptive) - num_params(adaptive.backbone) +
                                  active_backbone)


def test_export_state_dict_keeps_heads_and_neck(det_ckpt):
    config, ckpt = det_ckpt
    cfg = Config.fromfile(config)
    model, _ = build_model(cfg, ckpt)
    static_cfg, state = export_static(cfg, model, 'base')
    assert static_cfg.model.backbone.stage_blocks == (1, 1, 1, 1)
    full = model.state_dict()
    heads = [k for k in full if not k.startswith('backbone.')]
    assert heads and all(torch.equal(state[k], full[k]) for k in heads)
    assert not any('_skip' in k or k.startswith('backbone.layer1.1.') for k in state)


class _NoExportADN(AdaptiveDepthMixin, torch.nn.Module):
    num_skippable_stages = 2

    def _apply_skip(self, skip):
        pass


def test_backbones_that_cannot_be_exported_fail_clearly():
    model = torch.nn.Module()
    model.backbone = _NoExportADN()
    with pytest.raises(
            NotImplementedError, match='_NoExportADN cannot be exported to a static '
            'model yet: it does not implement static_cfg / static_state_dict'):
        exportable_backbone(model)
    model.backbone = MMDET_MODELS.build(dict(type='ResNet', depth=18))
    with pytest.raises(TypeError, match='has no ADN backbone'):
        exportable_backbone(model)


def test_export_subnet_tool_rejects_a_bad_skip(cls_ckpt, tmp_path):
    config, ckpt = cls_ckpt
    tool = load_tool('tools/deployment/export_subnet.py')
    with pytest.raises(SystemExit, match=r"error: skip='TTF': expected 4 letters of T/F"):
        tool.main([config, ckpt, '--skip', 'TTF', '--out', str(tmp_path)])
