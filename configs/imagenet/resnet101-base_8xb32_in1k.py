# ResNet-101-Base: a plain ResNet of the depth of ResNet-101-ADN's base-net, (2, 2, 12, 2)
# Bottleneck blocks per stage, trained alone with the recipe of ./resnet50_8xb32_in1k.py.
_base_ = ['./resnet50-base_8xb32_in1k.py']

model = dict(backbone=dict(depth=101, stage_blocks=(2, 2, 12, 2)))
