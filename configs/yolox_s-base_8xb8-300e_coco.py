# YOLOX-s-Base: a plain CSPDarknet of the depth of ./yolox_s_adn_8xb8-300e_coco.py's base-net
# (1, 2, 2, 1 blocks per stage instead of 1, 3, 3, 1), trained alone with the recipe of
# mmdet's YOLOX-s (the individually trained base-depth network).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(
    deepen_factor=1.0,  # the block counts below are the final ones
    arch_ovewrite=[  # in, out channels (before widen_factor), blocks, residual, SPP
        [64, 128, 1, True, False], [128, 256, 2, True, False], [256, 512, 2, True, False],
        [512, 1024, 1, False, True]
    ]))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
