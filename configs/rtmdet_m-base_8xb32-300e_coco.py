# RTMDet-m-Base: a plain CSPNeXt of the depth of ./rtmdet_m_adn_8xb32-300e_coco.py's base-net
# (1, 2, 2, 2 blocks per stage instead of 2, 4, 4, 2), trained alone with the recipe of
# mmdet's RTMDet-m (the individually trained base-depth network).
_base_ = 'mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(
    deepen_factor=1.0,  # the block counts below are the final ones
    arch_ovewrite=[  # in, out channels (before widen_factor), blocks, residual, SPP
        [64, 128, 1, True, False], [128, 256, 2, True, False], [256, 512, 2, True, False],
        [512, 1024, 2, False, True]
    ]))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# mmdet's RTMDet configs inherit base_batch_size=16 from schedule_1x; they train 8 x 32
auto_scale_lr = dict(base_batch_size=256)
