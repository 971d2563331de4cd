# Mask R-CNN with a plain ResNet-50 and FPN, COCO 1x (the paper's baseline row): mmdet's
# config unchanged, listed here beside ./mask_rcnn_r50_adn_fpn_1x_coco.py. For the
# paper's comparison start it from a ResNet-50 trained with the same ImageNet recipe as the
# ADN (configs/imagenet/resnet50_8xb32_in1k.py): --cfg-options
# model.backbone.init_cfg.checkpoint=PATH model.backbone.init_cfg.prefix=backbone.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
