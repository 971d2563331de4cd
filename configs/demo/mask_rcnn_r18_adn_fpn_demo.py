# A small adaptive-depth Mask R-CNN (ResNet-18-ADN at half width, 64-channel FPN) on the generated
# demo_shapes data (128 px), trained with sub-path specialization (the authors' detection
# recipe) for a few hundred iterations on CPU; validation reports the super-net (FFFF) and
# base-net (TTTT) side by side.
#
# As in the paper, the backbone starts from an ADN classifier, here the one that
# configs/demo/resnet18_adn_demo.py trains on generated shapes (tools/demo.sh runs both and
# copies the classifier's last checkpoint to the path below). As in mmdet's detection
# configs, the norms' statistics stay frozen (norm_eval), the skip-aware ones included (they
# are still switched with the depth). Without that file, add
# --cfg-options model.backbone.init_cfg=None to train from scratch.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

num_classes = 4
pretrained = 'work_dirs/demo/resnet18_adn_cls.pth'  # written by tools/demo.sh
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, type='ResNetADN', depth=18, base_channels=32, stem_channels=32,
                  out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, skip='super',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[32, 64, 128, 256],
              out_channels=64), rpn_head=dict(in_channels=64, feat_channels=64,
                                              anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=64),
                  bbox_head=dict(in_channels=64, fc_out_channels=256,
                                 num_classes=num_classes), mask_roi_extractor=dict(out_channels=64),
                  mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

# sub-path specialization, the authors' detection recipe:
# alpha * det(super) + (1 - alpha) * (det(base) + KD(pooled FPN outputs, mean over levels))
custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck',
         feat_kd=dict(type='SubPathKDLoss',
                      mode='pooled'), level_reduction='mean', base_task_loss=True)
]

dataset_type = 'DemoShapesDataset'  # generates data/demo_shapes/ on first use
data_root = 'data/demo_shapes/'
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler',
                 shuffle=True), batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'], format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator

max_iters = 700
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFFF,TTTT: SubnetTestLoop

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8)], gamma=0.1),
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=350, max_keep_ckpts=3,
                    save_best='TTTT/coco/bbox_mAP', rule='greater'),
    visualization=dict(type='DetVisualizationHook'))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=4)
