# Faster R-CNN with a ResNet-101-ADN backbone and FPN, COCO 1x: the recipe of
# ./faster_rcnn_r50_adn_fpn_1x_coco.py. Shared blocks per stage (2, 2, 12, 2) of (3, 4, 23, 3).
# Default weights: torchvision's ImageNet ResNet-101; an ImageNet ADN checkpoint of
# configs/imagenet/resnet101_adn_8xb32_in1k.py: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH model.backbone.init_cfg.prefix=backbone.
_base_ = './faster_rcnn_r50_adn_fpn_1x_coco.py'

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained',
                                                    checkpoint='torchvision://resnet101')))
