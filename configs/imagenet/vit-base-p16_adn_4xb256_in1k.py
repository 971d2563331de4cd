# ViT-B/16-ADN on ImageNet-1k with the authors' recipe (1024 images per step, 4 x 256):
# AdamW lr 7.5e-4, weight decay 0.2 (none on class token and position embedding), 30
# linear warm-up epochs from 0.033, cosine, 300 epochs, label smoothing 0.11, Mixup 0.2 +
# CutMix 1.0, gradient clipping 1, model EMA. Sub-path specialization with alpha 0.5, T 1.
# Four skip flags: 'FFFF' (super-net, 17.58 GMACs) .. 'TTTT' (base-net, 11.76 GMACs).
_base_ = ['mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(
    backbone=dict(type='VisionTransformerADN', arch='b', img_size=224, patch_size=16, skip='super'),
    head=dict(hidden_dim=None, loss=dict(type='LabelSmoothLoss', label_smooth_val=0.11,
                                         mode='original')),
    train_cfg=dict(_delete_=True,
                   augments=[dict(type='Mixup', alpha=0.2),
                             dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=256)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=7.5e-4, weight_decay=0.2),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.033, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=270, by_epoch=True, begin=30, end=300),
]
auto_scale_lr = dict(base_batch_size=1024)

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='stages',
         feat_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0),
         logit_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0, topk=500)),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
