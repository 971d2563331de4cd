# A small adaptive-depth RTMDet (CSPNeXt-ADN at 1/8 width, deepen_factor 0.67: blocks per stage
# 2, 4, 4, 2, three skippable stages, 8 sub-networks; 32-channel PAFPN with 2 blocks per CSP
# layer; a 32-channel head) on the generated demo_shapes data at 96 px, trained from scratch
# with sub-path specialization (the authors' detection recipe) for 1200 iterations on CPU.
# studies/study_rtmdet.py trains it and the models it is compared with; validation and
# `tools/test.py --skip all` report every sub-network.
#
# The skippable-neck option: --cfg-options model.neck.type=CSPNeXtPAFPNADN (4 more flags:
# 'FFF' + 'FFFF'; see the README).
_base_ = 'mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

num_classes = 4
img_size = 96
model = dict(
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(type='CSPNeXtADN', deepen_factor=0.67, widen_factor=0.125,
                  norm_cfg=dict(type='BN'), skip='super', init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=32, num_csp_blocks=2,
              norm_cfg=dict(type='BN')), bbox_head=dict(num_classes=num_classes, in_channels=32,
                                                        feat_channels=32, stacked_convs=1,
                                                        exp_on_reg=False, norm_cfg=dict(type='BN')),
    test_cfg=dict(nms_pre=300, max_per_img=20, score_thr=0.01))

# sub-path specialization, the authors' detection recipe:
# alpha * det(super) + (1 - alpha) * (det(base) + KD(pooled PAFPN outputs, mean over levels))
custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck',
         feat_kd=dict(type='SubPathKDLoss',
                      mode='pooled'), level_reduction='mean', base_task_loss=True)
]

dataset_type = 'DemoShapesDataset'  # generates data/demo_shapes/ on first use
data_root = 'data/demo_shapes/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='Pad', size=(img_size, img_size), pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric',
                     ann_file=data_root + 'annotations/instances_val.json', metric='bbox')
test_evaluator = val_evaluator

max_iters = 1200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFF,TTT: SubnetTestLoop

base_lr = 0.01
optim_wrapper = dict(optimizer=dict(lr=base_lr))  # AdamW, weight decay 0.05 (RTMDet's)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=max_iters // 2, end=max_iters,
         T_max=max_iters // 2, eta_min=base_lr * 0.05)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1, save_best=None))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=8)
