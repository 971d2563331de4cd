# Faster R-CNN with ResNet-50-Base and FPN, COCO 1x (the paper's '-Base' row): a plain ResNet
# of the depth of ResNet-50-ADN's base-net, (2, 2, 3, 2) Bottleneck blocks per stage,
# trained alone with the recipe of ./faster_rcnn_r50_adn_fpn_1x_coco.py.
# Weights: start from configs/imagenet/resnet50-base_8xb32_in1k.py's checkpoint
# (--cfg-options model.backbone.init_cfg.checkpoint=PATH model.backbone.init_cfg.prefix=backbone.);
# the default, torchvision's ResNet-50, fills only the blocks this network has (the first
# blocks of each stage; the others are reported as unexpected keys).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='StageResNet', stage_blocks=(2, 2, 3, 2)))
# checkpoints written atomically, with the ADN layout in their meta (mmadn)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
