# Plain ResNet-101 on ImageNet-1k with the ResNet-ADN recipe of ./resnet50_8xb32_in1k.py.
_base_ = ['./resnet50_8xb32_in1k.py']

model = dict(backbone=dict(depth=101))
