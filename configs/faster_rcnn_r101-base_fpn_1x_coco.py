# Faster R-CNN with ResNet-101-Base and FPN, COCO 1x (the paper's '-Base' row): a plain ResNet
# of the depth of ResNet-101-ADN's base-net, (2, 2, 12, 2) Bottleneck blocks per stage,
# with the recipe and weight options of ./faster_rcnn_r50-base_fpn_1x_coco.py (default
# weights: torchvision's ResNet-101).
_base_ = './faster_rcnn_r50-base_fpn_1x_coco.py'

model = dict(backbone=dict(depth=101, stage_blocks=(
    2, 2, 12, 2), init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
