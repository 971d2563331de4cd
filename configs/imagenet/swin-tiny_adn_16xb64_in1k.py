# Swin-T-ADN on ImageNet-1k: mmpretrain's Swin-T recipe, the Swin paper's (1024 images per
# step, AdamW lr 1e-3, weight decay 0.05 with none on norms, biases and position tables, 20
# warm-up epochs, cosine to 1e-5, 300 epochs, label smoothing 0.1, Mixup 0.8 + CutMix 1.0,
# random erasing 0.25, gradient clipping 5), plus a model EMA as in torchvision's Swin-T
# reference recipe.
# Sub-path specialization with alpha 0.5, T 1.
# Four skip flags: 'FFFF' (super-net, 4.51 GMACs) .. 'TTTT' (base-net, 2.35 GMACs).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='SwinTransformerADN', arch='tiny', img_size=224, drop_path_rate=0.2,
                           skip='super'))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='stages',
         feat_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0),
         logit_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0, topk=500)),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
