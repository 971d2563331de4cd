# Mask R-CNN with a Swin-T-ADN backbone and FPN, COCO 1x: mmdet's Swin-T Mask R-CNN recipe
# (AdamW lr 1e-4, weight decay 0.05, 12 epochs) trained with sub-path specialization
# as in the authors' detection code: alpha 0.5, the base-net's detection loss, and KD between
# the global-average-pooled FPN outputs (channel softmax), averaged over levels.
# The backbone is mmpretrain's Swin (SwinTransformerADN) with the four stage outputs for
# the FPN. Start from an ImageNet Swin-T-ADN checkpoint (configs/imagenet/
# swin-tiny_adn_16xb64_in1k.py); a plain mmpretrain Swin-T checkpoint, as below, also
# loads (each skip norm starts as a copy of its partner).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmclassification/v0/swin-transformer/swin_tiny_224_b16x64_300e_imagenet_20210616_090925-66df6be6.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformerADN',
        arch='tiny',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,  # pad maps to whole windows, as mmdet's Swin does
        skip='super',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck',
         feat_kd=dict(type='SubPathKDLoss',
                      mode='pooled'), level_reduction='mean', base_task_loss=True)
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFFF,TTTT: SubnetTestLoop
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
