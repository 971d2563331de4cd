# ResNet-50-Base: a plain ResNet of the depth of ResNet-50-ADN's base-net, (2, 2, 3, 2)
# Bottleneck blocks per stage (the paper's '-Base' rows), trained alone with the same recipe
# as ./resnet50_8xb32_in1k.py (150 epochs, SGD lr 0.1, lr x0.1 at epochs 60, 100, 140).
_base_ = ['./resnet50_8xb32_in1k.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

# mmpretrain's registry builds mmpretrain's ResNet underneath (its defaults: norm_eval=False,
# out_indices=(3, ))
model = dict(backbone=dict(type='StageResNet', stage_blocks=(2, 2, 3, 2)))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
