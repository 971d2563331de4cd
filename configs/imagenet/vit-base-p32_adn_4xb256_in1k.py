# ViT-B/32-ADN on ImageNet-1k: the ViT-B/16-ADN recipe with 32 x 32 patches.
# Four skip flags: 'FFFF' (super-net, 4.41 GMACs) .. 'TTTT' (base-net, 2.98 GMACs).
_base_ = ['./vit-base-p16_adn_4xb256_in1k.py']

model = dict(backbone=dict(patch_size=32))
