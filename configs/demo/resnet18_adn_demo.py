# A small ResNet-18-ADN classifier (half width: 32 base channels) on the generated
# demo_shapes_cls data (32 px, 1000 images per class), trained with sub-path specialization
# (stage-feature KD + logit KD); validation reports the super-net and the base-net side by
# side. In the demo (tools/demo.sh) it is the "ImageNet" step: the demo detector
# (mask_rcnn_r18_adn_fpn_demo.py) starts from its backbone.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

num_classes = 4
model = dict(
    backbone=dict(type='ResNetADN', depth=18, base_channels=32, stem_channels=32, out_indices=(3, ),
                  norm_eval=False, skip='super'), head=dict(num_classes=num_classes,
                                                            in_channels=256, topk=(1, )))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='stages',
         feat_kd=dict(type='SubPathKDLoss',
                      mode='spatial'), logit_kd=dict(type='SubPathKDLoss', mode='pooled'))
]

dataset_type = 'DemoShapesClsDataset'  # generates data/demo_shapes_cls/ on first use
data_root = 'data/demo_shapes_cls'
data_preprocessor = dict(num_classes=num_classes, mean=[127.5, 127.5, 127.5],
                         std=[64.0, 64.0, 64.0], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler',
                 shuffle=True), dataset=dict(type=dataset_type, data_root=data_root,
                                             data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_iters = 600
train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFFF,TTTT: SubnetTestLoop

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
