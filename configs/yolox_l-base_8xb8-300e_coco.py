# YOLOX-l-Base: a plain CSPDarknet of the depth of ./yolox_l_adn_8xb8-300e_coco.py's base-net
# (2, 5, 5, 3 blocks per stage instead of 3, 9, 9, 3), trained alone with the recipe of
# mmdet's YOLOX-l (the individually trained base-depth network).
_base_ = 'mmdet::yolox/yolox_l_8xb8-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(
    deepen_factor=1.0,  # the block counts below are the final ones
    arch_ovewrite=[  # in, out channels (before widen_factor), blocks, residual, SPP
        [64, 128, 2, True, False], [128, 256, 5, True, False], [256, 512, 5, True, False],
        [512, 1024, 3, False, True]
    ]))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
