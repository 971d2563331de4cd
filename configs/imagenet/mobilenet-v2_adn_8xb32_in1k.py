# MobileNetV2-ADN on ImageNet-1k. The paper trains its CNNs with the settings of the original
# papers (Sandler et al. for MobileNetV2); that is mmpretrain's MobileNetV2 recipe, kept as is:
# 256 images per step (8 x 32), SGD lr 0.045, momentum 0.9, weight decay 4e-5, lr x0.98
# every epoch, 300 epochs. Sub-path specialization with alpha 0.5, T 1.
# Five skip flags: 'FFFFF' (super-net, 0.31 GMACs) .. 'TTTTT' (base-net, 0.21 GMACs) as
# mmadn.analysis counts them (the authors' table: 0.32 / 0.22, matched when the ReLU6s count too).
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='MobileNetV2ADN', widen_factor=1.0, skip='super'))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='stages',
         feat_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0),
         logit_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0, topk=500))
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
