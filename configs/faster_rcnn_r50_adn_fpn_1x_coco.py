# Faster R-CNN with a ResNet-50-ADN backbone and FPN, COCO 1x: mmdet's recipe (12 epochs,
# 8 GPUs x 2 images, SGD lr 0.02, lr x0.1 at epochs 8 and 11, frozen stem + stage 1,
# norm_eval) trained with sub-path specialization as in the authors' detection code:
# loss = alpha * det(super) + (1 - alpha) * (det(base) + KD), alpha 0.5, KD between the
# global-average-pooled FPN outputs (channel softmax, KL per image), averaged over levels.
# Validation reports the super-net (FFFF) and the base-net (TTTT); the best checkpoint
# follows the super-net's bbox mAP.
#
# Backbone weights: by default torchvision's ImageNet ResNet-50 (each `*_skip` norm starts
# as a copy of its partner). Start from an ImageNet ADN checkpoint instead with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# for a backbone-only file (tools/model_converters/adn_official_to_mmadn.py writes one), and
# add `model.backbone.init_cfg.prefix=backbone.` for a checkpoint of
# configs/imagenet/resnet50_adn_8xb32_in1k.py (a whole classifier).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='ResNetADN', skip='super'))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='neck',
         feat_kd=dict(type='SubPathKDLoss',
                      mode='pooled'), level_reduction='mean', base_task_loss=True)
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFFF,TTTT: SubnetTestLoop
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', save_best='FFFF/coco/bbox_mAP', rule='greater'))
