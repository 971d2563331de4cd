"""The README's "Use an ADN backbone in your own mmdet config" block, on three mmdet
detectors that ship no ADN config here: each builds with ResNetADN, trains one iteration with
the sub-path specialization hook and predicts with the super-net and the base-net."""
import math
import os.path as osp
import re

import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmadn.datasets.demo_shapes import DEMO_SHAPES_CLASSES
from ..conftest import ROOT, read_scalars
from .test_config_recipes import load
from .test_detection_configs_train import demo_data_overrides

HEADING = '### Use an ADN backbone in your own mmdet config'
DETECTORS = {
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'cascade_mask_rcnn': 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'fcos': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
}


def readme_block():
    """The first python block under the README's drop-in heading."""
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    assert HEADING in text
    block = re.search(r'```python\n(.*?)```', text[text.index(HEADING):], re.S).group(1)
    assert re.search(r"^_base_ = 'mmdet::", block, re.M)
    return block


def for_demo_data(cfg):
    """The demo data's 4 classes; fewer proposals / RoIs for the two-stage detector; every
    detection kept (an untrained head scores below mmdet's 0.05 threshold)."""
    m = cfg.model
    heads = [m.bbox_head] if 'bbox_head' in m else m.roi_head.bbox_head + [m.roi_head.mask_head]
    for head in heads:
        head.num_classes = len(DEMO_SHAPES_CLASSES)
    if 'roi_head' in m:
        m.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        for stage in m.train_cfg.rcnn:
            stage.sampler.num = 32
        m.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
        m.test_cfg.rcnn.update(score_thr=0.0, max_per_img=10)
    else:
        m.test_cfg.update(nms_pre=200, score_thr=0.0, max_per_img=10)


@pytest.fixture(scope='module')
def resnet18_ckpt(tmp_path_factory):
    """A torchvision ResNet-18 checkpoint (random weights, torchvision's init: no block is
    an identity, unlike mmdet's zero-initialised residual norms), standing in for the
    configs' ImageNet ResNet."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = str(tmp_path_factory.mktemp('ckpt') / 'resnet18.pth')
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize('name', sorted(DETECTORS))
def test_readme_block_on_an_mmdet_detector(name, det_data_root, resnet18_ckpt, tmp_path):
    ckpt, ckpt_state = resnet18_ckpt
    path = tmp_path / f'{name}_adn.py'
    block = readme_block()
    path.write_text(
        re.sub(r'^_base_ = .*$', f"_base_ = '{DETECTORS[name]}'", block, count=1, flags=re.M))
    upstream = tmp_path / f'{name}.py'
    upstream.write_text(f"_base_ = '{DETECTORS[name]}'\n")
    plain_backbone = Config.fromfile(str(upstream)).model.backbone

    cfg = load(
        str(path),
        demo_data_overrides(det_data_root, num_train=2, num_val=1) + [
            'model.backbone.depth=18', 'model.neck.in_channels=[64,128,256,512]',
            f'model.backbone.init_cfg.checkpoint={ckpt}', 'default_hooks.checkpoint.interval=-1',
            'default_hooks.checkpoint.save_last=False'
        ])
    # the block swaps the type and keeps the rest of the detector's ResNet settings
    assert cfg.model.backbone.type == 'ResNetADN' and plain_backbone.type == 'ResNet'
    for key in ('style', 'frozen_stages', 'norm_eval', 'norm_cfg', 'out_indices'):
        assert cfg.model.backbone[key] == plain_backbone[key]
    for_demo_data(cfg)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.visualizer.name = f'vis_{name}_{tmp_path.name}'
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
        model = runner.model
        backbone = model.backbone
        assert type(backbone).__name__ == 'ResNetADN' and runner.iter == 1
        assert backbone.style == plain_backbone['style']  # 'caffe' for FCOS
        # a plain ResNet checkpoint: each skip norm starts as a copy of its partner (layer1
        # is frozen by these configs, so it still holds the loaded values)
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            loaded = ckpt_state[f'layer1.0.bn1.{key}']
            assert torch.equal(getattr(backbone.layer1[0].bn1, key), loaded)
            assert torch.equal(getattr(backbone.layer1[0].bn1_skip, key), loaded)
        rows = read_scalars(cfg.work_dir)
        losses = [r for r in rows if 'loss' in r]
        assert len(losses) == 1 and math.isfinite(losses[0]['loss'])
        assert 'loss_kd_feat' in losses[0]  # the hook trained the base-net
        # the block's SubnetValLoop evaluated both depths at the end of the epoch
        assert any({'FFFF/coco/bbox_mAP', 'TTTT/coco/bbox_mAP'} <= set(r) for r in rows)

        # one prediction per depth, from the same weights
        batch = next(iter(runner.val_dataloader))
        preds = {}
        for skip in ('super', 'base'):
            with backbone.skipping(skip):
                out, = model.test_step(batch)
            inst = out.pred_instances
            n = len(inst)
            assert n == 10 and inst.bboxes.shape == (n, 4) and inst.labels.shape == (n, )
            if name == 'cascade_mask_rcnn':
                assert inst.masks.shape[0] == n
                assert inst.masks.shape[1:] == tuple(out.ori_shape)
            preds[skip] = inst.scores
        assert not torch.allclose(preds['super'], preds['base'])
        assert backbone.skip_str == 'FFFF'
    finally:
        DefaultScope._instance_dict.clear()
