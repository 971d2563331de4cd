"""SwinTransformerADN: layout, GMACs against the authors' table, equivalence with plain
mmpretrain Swins, every sub-network forward/backward, one training step with the hook in
an mmpretrain classifier, the COCO Mask R-CNN config trained by tools/train.py on the demo
data, the ImageNet config."""
import math
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.registry import MODELS

import mmadn  # noqa: F401
from mmadn.models.backbones import SwinTransformerADN
from mmadn.models.checkpoint import adn_backbone_meta, check_checkpoint_fits
from mmadn.models.layers import CheckpointMismatchError
from ..conftest import ROOT, read_scalars, run_tool
from .adn_backbone_checks import (classifier_train_step_with_hook, flops_g, load_plain_checkpoint,
                                  one_thread, run_every_subnet, skip_norms_in_use,
                                  stage_feature_shapes)

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

COCO_CONFIG = 'configs/mask_rcnn_swin-t_adn_fpn_1x_coco.py'
TINY_ARCH = dict(embed_dims=16, depths=[2, 2, 4, 2], num_heads=[1, 1, 2, 2])
TINY = dict(arch=TINY_ARCH, img_size=64, window_size=2, drop_path_rate=0.0)


def _classifier(backbone, in_channels=768, num_classes=1000):
    return MODELS.build(
        dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=in_channels)))


def _perturbed_plain(**kw):
    torch.manual_seed(0)
    plain = SwinTransformer(**kw)
    plain.init_weights()
    for p in plain.parameters():  # non-trivial norms
        p.data.add_(0.05 * torch.randn_like(p))
    plain.eval()
    return plain


@pytest.fixture(scope='module')
def swin_t():
    return _classifier(dict(type='SwinTransformerADN', arch='tiny', img_size=224))


def test_swin_t_layout_keys_and_registries(swin_t):
    m = swin_t.backbone
    assert m.num_skippable_stages == 4 and m.num_shared_blocks == (1, 1, 3, 1)
    assert m.skippable_blocks() == [
        'stages.0.blocks.1', 'stages.1.blocks.1', 'stages.2.blocks.3', 'stages.2.blocks.4',
        'stages.2.blocks.5', 'stages.3.blocks.1'
    ]
    pairs = m.skip_norm_pairs()
    # 6 kept blocks x (norm1, norm2) + the 3 patch-merging norms
    assert len(pairs) == 6 * 2 + 3
    assert ('stages.0.downsample.norm_skip', 'stages.0.downsample.norm') in pairs
    plain = set(SwinTransformer(arch='tiny').state_dict())
    assert plain <= set(m.state_dict())
    assert set(m.state_dict()) - plain == {f'{s}.{f}' for s, _ in pairs for f in ('weight', 'bias')}
    assert MODELS.get('SwinTransformerADN') is SwinTransformerADN
    assert MMDET_MODELS.get('SwinTransformerADN') is SwinTransformerADN


def test_swin_t_gmacs_match_authors_table(swin_t):
    authors = {'FFFF': 4.49, 'TTFF': 3.75, 'TTTT': 2.34}
    for skip, ref in authors.items():
        got = flops_g(swin_t, swin_t.backbone, skip)
        assert abs(got - ref) / ref < 0.02, (skip, got, ref)


def test_plain_checkpoint_loads_super_equals_plain_and_base_equals_kept_blocks(tmp_path):
    plain = _perturbed_plain(**TINY)
    adn = load_plain_checkpoint(SwinTransformerADN, plain, tmp_path, **TINY)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(adn(x)[0], plain(x)[0], rtol=0, atol=0)
        # the base-net is the plain Swin of depths (1, 1, 2, 1): the kept blocks
        short = SwinTransformer(**dict(TINY, arch=dict(TINY_ARCH, depths=[1, 1, 2, 1])))
        skipped = set(adn.skippable_blocks())
        short.load_state_dict({
            k: v
            for k, v in plain.state_dict().items() if '.'.join(k.split('.')[:4]) not in skipped
        })
        short.eval()
        with adn.skipping('TTTT'):
            torch.testing.assert_close(adn(x)[0], short(x)[0], rtol=0, atol=0)
        assert not torch.allclose(adn(x)[0], short(x)[0])


def test_old_mmpretrain_checkpoint_keys_are_converted():
    plain = _perturbed_plain(**TINY)
    # an mmcls 0.x file: the last out norm is `norm.`, window masks are stored
    state = {k.replace('norm3.', 'norm.'): v for k, v in plain.state_dict().items()}
    state['stages.0.blocks.1.attn.attn_mask'] = torch.zeros(1)
    adn = SwinTransformerADN(**TINY)
    adn.load_state_dict(state)  # no metadata: version None
    assert torch.equal(adn.norm3.weight, plain.norm3.weight)


def test_every_subnet_forward_backward_and_norm_sets():
    torch.manual_seed(0)
    m = SwinTransformerADN(**TINY, out_indices=(0, 1, 2, 3))
    m.init_weights()
    x = torch.randn(2, 3, 64, 64)
    stage_blocks = [['stages.0.blocks.1'], ['stages.1.blocks.1'],
                    ['stages.2.blocks.2', 'stages.2.blocks.3'], ['stages.3.blocks.1']]
    outs = run_every_subnet(m, x, stage_blocks)
    assert len(outs) == 16
    assert [o.shape for o in outs['TTTT']] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4),
                                               (2, 128, 2, 2)]
    assert not torch.allclose(outs['FFFF'][0], outs['TTTT'][0])
    # the patch merging in front of stage 2 follows stage 2's flag
    assert skip_norms_in_use(m, x, 'FTFF') == {
        'stages.1.blocks.0.norm1_skip', 'stages.1.blocks.0.norm2_skip',
        'stages.0.downsample.norm_skip'
    }
    assert stage_feature_shapes(m, x) == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4),
                                          (2, 128, 2, 2)]


def test_one_training_step_with_the_hook_classifier():
    model = _classifier(dict(type='SwinTransformerADN', **TINY), in_channels=128, num_classes=5)
    model.init_weights()
    log_vars, changed = classifier_train_step_with_hook(model, 5, 64)
    assert log_vars['loss_kd_feat'] > 0 and log_vars['loss_kd_logits'] > 0
    assert {
        'backbone.stages.2.blocks.3.attn.w_msa.qkv.weight',
        'backbone.stages.0.blocks.0.norm1_skip.weight',
        'backbone.stages.0.downsample.norm_skip.weight', 'head.fc.weight'
    } <= changed


def _coco_config():
    cfg = Config.fromfile(osp.join(ROOT, COCO_CONFIG))
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    cfg.model.backbone.pop('init_cfg')  # nothing downloads
    return cfg


def test_coco_config_builds_swin_t_with_fpn_outputs():
    cfg = _coco_config()
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MMDET_MODELS.build(cfg.model)
    assert isinstance(model.backbone, SwinTransformerADN)
    assert model.backbone.num_features == [96, 192, 384, 768]
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    hook = cfg.custom_hooks[0]
    assert hook.type == 'SubPathSpecializationHook' and hook.base_task_loss
    assert cfg.val_cfg.type == 'SubnetValLoop'


def _demo_options(data_root):
    """--cfg-options that point the COCO config at the demo data, small: 4 training images
    at 64 px, 2 per batch (2 iterations), 2 validation images, 4 classes, 64-channel FPN
    and heads, fewer RoIs, no checkpoint, no pretrained weights (the backbone stays
    Swin-T)."""
    opts = [
        f'model.{k}=64'
        for k in ('neck.out_channels', 'rpn_head.in_channels', 'rpn_head.feat_channels',
                  'roi_head.bbox_roi_extractor.out_channels', 'roi_head.bbox_head.in_channels',
                  'roi_head.mask_roi_extractor.out_channels', 'roi_head.mask_head.in_channels',
                  'roi_head.mask_head.conv_out_channels')
    ]
    for split, resize, num in (('train', 2, 4), ('val', 1, 2)):
        loader = f'{split}_dataloader'
        opts += [
            f'{loader}.dataset.{k}'
            for k in ('type=DemoShapesDataset', f'data_root={data_root}',
                      f'ann_file=annotations/instances_{split}.json', f'data_prefix.img={split}/',
                      f'indices={num}', f'pipeline.{resize}.scale=(64,64)')
        ]
        opts += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    return opts + [
        'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
        f'val_evaluator.ann_file={data_root}annotations/instances_val.json',
        'model.backbone.init_cfg=None', 'model.roi_head.bbox_head.fc_out_channels=256',
        'model.roi_head.bbox_head.num_classes=4', 'model.roi_head.mask_head.num_classes=4',
        'model.train_cfg.rcnn.sampler.num=64', 'model.train_cfg.rpn_proposal.max_per_img=100',
        'model.test_cfg.rpn.max_per_img=100', 'model.test_cfg.rcnn.max_per_img=10',
        'default_hooks.checkpoint=None', 'default_hooks.logger.interval=1'
    ]


def test_coco_config_trains_two_iterations_with_the_hook(det_data_root, tmp_path):
    run_tool(
        ['python', 'tools/train.py', COCO_CONFIG, '--work-dir',
         str(tmp_path), '--cfg-options'] + _demo_options(det_data_root.rstrip('/') + '/'))
    rows = read_scalars(str(tmp_path))
    losses = [r for r in rows if 'loss' in r]
    assert len(losses) == 2 and all(math.isfinite(r['loss']) for r in losses)
    # both passes of sub-path specialization: the super-net's and the base-net's Mask R-CNN
    # losses and the feature KD
    assert {'loss_rpn_cls', 'loss_mask', 'base_loss_cls', 'base_loss_mask'} <= set(losses[0])
    assert all(r['loss_kd_feat'] > 0 for r in losses)
    val = [r for r in rows if 'FFFF/coco/bbox_mAP' in r]
    assert len(val) == 1
    assert {f'{s}/coco/{m}_mAP' for s in ('FFFF', 'TTTT') for m in ('bbox', 'segm')} <= set(val[0])


def test_imagenet_config_builds():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'imagenet', 'swin-tiny_adn_16xb64_in1k.py'))
    assert cfg.model.backbone.type == 'SwinTransformerADN' and cfg.model.backbone.arch == 'tiny'
    cfg.model.backbone.update(TINY)  # the recipe as is, a small Swin (fast)
    cfg.model.head.in_channels = 128
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, SwinTransformerADN)
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.train_cfg.max_epochs == 300
    assert [h.type for h in cfg.custom_hooks] == ['SubPathSpecializationHook', 'EMAHook']
    assert cfg.custom_hooks[0].logit_kd.topk == 500


def test_num_shared_blocks_and_a_checkpoint_of_another_split():
    model = SwinTransformerADN(**TINY, num_shared_blocks=(1, 1, 3, 1))
    assert model.skippable_blocks() == [
        'stages.0.blocks.1', 'stages.1.blocks.1', 'stages.2.blocks.3', 'stages.3.blocks.1'
    ]
    with pytest.raises(
            ValueError, match=r'num_shared_blocks=\(2, 1, 2, 1\): expected 4 '
            r'integers, one per stage, within \(1\.\.1, 1\.\.1, 1\.\.3, 1\.\.1\)'):
        SwinTransformerADN(**TINY, num_shared_blocks=(2, 1, 2, 1))
    # a checkpoint of another split: both refusals name the argument to set, which it takes
    default = SwinTransformerADN(**TINY)  # (1, 1, 2, 1)
    with pytest.raises(CheckpointMismatchError) as err:
        default.load_state_dict(model.state_dict())
    assert ('trained with num_shared_blocks=(1, 1, 3, 1), this SwinTransformerADN has '
            'num_shared_blocks=(1, 1, 2, 1)') in str(err.value)
    ckpt = dict(state_dict=model.state_dict(), meta=dict(adn_backbone=adn_backbone_meta(model)))
    with pytest.raises(CheckpointMismatchError,
                       match=r'set model\.backbone\.num_shared_blocks=\(1, 1, 3, 1\)'):
        check_checkpoint_fits(default, ckpt, 'swin.pth')
    following = SwinTransformerADN(**TINY, num_shared_blocks=(1, 1, 3, 1))
    check_checkpoint_fits(following, ckpt, 'swin.pth')
    following.load_state_dict(model.state_dict(), strict=True)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r'depths=\[2, 1, 4, 2\]'):
        SwinTransformerADN(**dict(TINY, arch=dict(TINY_ARCH, depths=[2, 1, 4, 2])))
