"""Each shipped detection config trains on the demo data when pointed at it with
--cfg-options (a ResNet-18 backbone, 128 px, 4 training images: 2 iterations, then validation)."""
import glob
import math
import os.path as osp

import pytest
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmadn.datasets.demo_shapes import DEMO_SHAPES_CLASSES
from ..conftest import read_scalars, run_tool
from .test_config_recipes import DETECTION, kind, load


def demo_data_overrides(data_root, num_train=4, num_val=2, size=128):
    """--cfg-options for an mmdet COCO config (mmdet's standard pipelines): train and
    validate on the first images of the demo data at ``size`` px, one epoch."""
    root = data_root.rstrip('/') + '/'
    opts = []
    for split, loader, resize_idx, n in (('train', 'train_dataloader', 2, num_train),
                                         ('val', 'val_dataloader', 1, num_val)):
        opts += [
            f'{loader}.dataset.type=DemoShapesDataset',
            f'{loader}.dataset.data_root={root}',
            f'{loader}.dataset.ann_file=annotations/instances_{split}.json',
            f'{loader}.dataset.data_prefix.img={split}/',
            f'{loader}.dataset.indices={n}',
            f'{loader}.dataset.pipeline.{resize_idx}.scale=({size},{size})',
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
        ]
    return opts + [
        f'val_evaluator.ann_file={root}annotations/instances_val.json', 'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1'
    ]


def demo_overrides(data_root, path):
    """What a user passes to tools/train.py to run a COCO config of ``path`` on the demo
    data (4 classes), small."""
    num_classes = len(DEMO_SHAPES_CLASSES)
    opts = [f'model.roi_head.bbox_head.num_classes={num_classes}']
    # a narrow FPN and heads (the 256-channel ones dominate the time on a CPU)
    opts += [
        'model.neck.out_channels=64', 'model.rpn_head.in_channels=64',
        'model.rpn_head.feat_channels=64', 'model.roi_head.bbox_roi_extractor.out_channels=64',
        'model.roi_head.bbox_head.in_channels=64', 'model.roi_head.bbox_head.fc_out_channels=256'
    ]
    if 'mask_rcnn' in osp.basename(path):
        opts += [
            f'model.roi_head.mask_head.num_classes={num_classes}',
            'model.roi_head.mask_roi_extractor.out_channels=64',
            'model.roi_head.mask_head.in_channels=64',
            'model.roi_head.mask_head.conv_out_channels=64'
        ]
    opts += demo_data_overrides(data_root)
    return opts + [
        # a ResNet-18 backbone (the block counts of the config's depth would only add time)
        'model.backbone.depth=18',
        'model.neck.in_channels=[64,128,256,512]',
        'model.backbone.init_cfg=None',
        # fewer proposals and RoIs, and every detection kept, so that the untrained model's
        # validation has results to score
        'model.train_cfg.rpn_proposal.nms_pre=200',
        'model.train_cfg.rpn_proposal.max_per_img=100',
        'model.train_cfg.rcnn.sampler.num=64',
        'model.test_cfg.rpn.nms_pre=200',
        'model.test_cfg.rpn.max_per_img=50',
        'model.test_cfg.rcnn.score_thr=0.0',
        'model.test_cfg.rcnn.max_per_img=10',
        # only the best checkpoint of an ADN config (each save formats the whole config)
        'default_hooks.checkpoint.interval=-1',
        'default_hooks.checkpoint.save_last=False',
    ]


def _check_run(path, work_dir):
    rows = read_scalars(work_dir)
    losses = [r for r in rows if 'loss' in r]
    assert len(losses) == 2  # 4 images, 2 per batch, one epoch
    assert all(math.isfinite(r['loss']) for r in losses)
    expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'}
    if 'mask_rcnn' in path:
        expected.add('loss_mask')
    prefixes = ['']
    if kind(path) == 'adn':  # sub-path specialization and both sub-networks validated
        expected |= {'loss_kd_feat', 'base_loss_cls'}
        prefixes = ['FFFF/', 'TTTT/']
    assert expected <= set(losses[0])
    val = [r for r in rows if any(f'{p}coco/bbox_mAP' in r for p in prefixes)]
    assert len(val) == 1
    metrics = ['bbox'] + (['segm'] if 'mask_rcnn' in path else [])
    assert {f'{p}coco/{m}_mAP' for p in prefixes for m in metrics} <= set(val[0])
    saved = sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))
    assert saved == (['best_FFFF_coco_bbox_mAP_epoch_1.pth'] if kind(path) == 'adn' else [])


TOOL_RUN = 'configs/mask_rcnn_r50_adn_fpn_1x_coco.py'  # trained by tools/train.py below


@pytest.mark.parametrize('path', [p for p in DETECTION if not p.endswith(TOOL_RUN)],
                         ids=osp.basename)
def test_detection_config_trains_two_iterations(path, det_data_root, tmp_path):
    cfg = load(path, demo_overrides(det_data_root, path))
    cfg.work_dir = str(tmp_path)
    cfg.visualizer.name = tmp_path.name  # one visualizer (and scalars file) per run
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    finally:
        DefaultScope._instance_dict.clear()
    assert runner.iter == 2 and type(runner.model.backbone).__name__ == {
        'adn': 'ResNetADN',
        'base': 'StageResNet',
        'plain': 'ResNet'
    }[kind(path)]
    _check_run(path, str(tmp_path))


def test_train_tool_with_cfg_options(det_data_root, tmp_path):
    path = TOOL_RUN
    run_tool(['python', 'tools/train.py', path, '--work-dir',
              str(tmp_path), '--cfg-options'] + demo_overrides(det_data_root, path))
    _check_run(path, str(tmp_path))
