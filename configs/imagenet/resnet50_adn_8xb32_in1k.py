# ResNet-50-ADN on ImageNet-1k, the authors' recipe (that of ./resnet50_8xb32_in1k.py:
# 150 epochs, 8 GPUs x 32 images, SGD lr 0.1, momentum 0.9, weight decay 1e-4 and none on
# norms and biases, lr x0.1 at epochs 60, 100, 140) plus sub-path specialization: alpha 0.5,
# T 1, stage features global-average-pooled and logits over the super-net's top-500 classes,
# as in the authors' code. 16 sub-networks from 'FFFF' (super-net, 4.11 GFLOPs at 224 px)
# to 'TTTT' (base-net, 2.58 GFLOPs); validation reports both, the best checkpoint follows
# the super-net's top-1.
_base_ = ['./resnet50_8xb32_in1k.py']
custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)

model = dict(backbone=dict(type='ResNetADN', skip='super'))

custom_hooks = [
    dict(type='SubPathSpecializationHook', alpha=0.5, features='stages',
         feat_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0),
         logit_kd=dict(type='SubPathKDLoss', mode='pooled', temperature=1.0, topk=500))
]
val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))
test_cfg = dict(type='TestLoop')  # tools/test.py --skip all|FFFF,TTTT: SubnetTestLoop
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', save_best='FFFF/accuracy/top1', rule='greater'))
