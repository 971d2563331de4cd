# Plain ResNet-50 on ImageNet-1k with the ResNet-ADN recipe (the paper trains its individual
# baselines with the same settings as the adaptive-depth networks): 150 epochs, 256 images
# per step (8 GPUs x 32), SGD lr 0.1 (per 256 images), momentum 0.9, weight decay 1e-4 and
# none on norms and biases, lr x0.1 at epochs 60, 100 and 140.
# mmpretrain's ResNet-50 config underneath: model, data pipeline and runtime follow it.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = dict(_delete_=True, type='MultiStepLR', by_epoch=True, milestones=[60, 100, 140],
                       gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=150, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
