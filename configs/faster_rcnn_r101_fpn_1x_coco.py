# Faster R-CNN with a plain ResNet-101 and FPN, COCO 1x (the paper's baseline row): mmdet's
# config unchanged, listed here beside ./faster_rcnn_r101_adn_fpn_1x_coco.py; an ImageNet
# checkpoint of configs/imagenet/resnet101_8xb32_in1k.py: --cfg-options
# model.backbone.init_cfg.checkpoint=PATH model.backbone.init_cfg.prefix=backbone.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'
