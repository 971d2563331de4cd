# YOLOX-l with a CSPDarknet-ADN backbone: mmdet's YOLOX-l recipe (300 epochs, 8 GPUs x 8
# images, SGD lr 0.01, Mosaic and MixUp switched off for the last 15 epochs, EMA with
# ExpMomentumEMA, SyncNormHook), trained with sub-path specialization as in the authors'
# detection code: loss = alpha * det(super) + (1 - alpha) * (det(base) + KD), alpha 0.5, KD
# between the global-average-pooled PAFPN outputs (channel softmax, KL per image), averaged
# over levels. CSPDarknet at deepen_factor 1.0 has 3, 9, 9, 3 blocks per stage: stages 1 to 3
# can skip ('FFF' .. 'TTT', 8 sub-networks; the SPP stage does not). Validation reports the
# super-net and the base-net; the best checkpoint follows the super-net's bbox mAP. mmdet's
# own hooks (EMA, pipeline switch) are kept: the ADN hook is added to them.
_base_ = 'mmdet::yolox/yolox_l_8xb8-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='CSPDarknetADN', skip='super'))

custom_hooks = _base_.custom_hooks + [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck', feat_kd=dict(
        type='SubPathKDLoss', mode='pooled'), level_reduction='mean', base_task_loss=True)
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFF,TTT: SubnetTestLoop
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', save_best='FFF/coco/bbox_mAP', rule='greater'))
