# ResNet-101-ADN on ImageNet-1k with the recipe of ./resnet50_adn_8xb32_in1k.py. The shared
# (never skipped) blocks per stage follow the authors' rule, (2, 2, 12, 2) of (3, 4, 23, 3):
# the base-net 'TTTT' drops layer1.2, layer2.2-3, layer3.12-22 and layer4.2.
_base_ = ['./resnet50_adn_8xb32_in1k.py']

model = dict(backbone=dict(depth=101))
