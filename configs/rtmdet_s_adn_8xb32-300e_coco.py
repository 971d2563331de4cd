# RTMDet-s with a CSPNeXt-ADN backbone: mmdet's RTMDet-s recipe (300 epochs, 8 GPUs x 32
# images, AdamW lr 0.004, EMA with ExpMomentumEMA, the pipeline switch for the last 20 epochs,
# SyncBN, the ImageNet CSPNeXt-s weights), trained with sub-path specialization as in the
# authors' detection code: loss = alpha * det(super) + (1 - alpha) * (det(base) + KD), alpha
# 0.5, KD between the global-average-pooled PAFPN outputs (channel softmax, KL per image),
# averaged over levels. CSPNeXt at deepen_factor 0.33 has 1, 2, 2, 1 blocks per stage: stages
# 2 and 3 can skip ('FF' .. 'TT', 4 sub-networks; the SPP stage does not). Validation reports
# the super-net and the base-net; the best checkpoint follows the super-net's bbox mAP.
# mmdet's own hooks (EMA, pipeline switch) are kept: the ADN hook is added to them.
_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='CSPNeXtADN', skip='super'))

custom_hooks = _base_.custom_hooks + [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck', feat_kd=dict(
        type='SubPathKDLoss', mode='pooled'), level_reduction='mean', base_task_loss=True)
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FF,TT: SubnetTestLoop
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', save_best='FF/coco/bbox_mAP', rule='greater'))
# mmdet's RTMDet configs inherit base_batch_size=16 from schedule_1x; they train 8 x 32
auto_scale_lr = dict(base_batch_size=256)
