"""Every shipped ResNet(-ADN) config loads and builds; the schedules and optimizers built from
them follow the stated recipes; the backbone weights load as documented."""
import copy
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope, init_default_scope

import mmadn  # noqa: F401
from mmadn.models.layers.skip import default_num_shared_blocks
from ..conftest import ROOT

IMAGENET = sorted(glob.glob(osp.join(ROOT, 'configs', 'imagenet', 'resnet*.py')))
DETECTION = sorted(glob.glob(osp.join(ROOT, 'configs', '*_rcnn_r*_fpn_1x_coco.py')))
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


@functools.lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(path)


def load(path, options=()):
    cfg = copy.deepcopy(_load(path))  # parsing an mmdet config takes most of a second
    parsed = {}  # the parsing of --cfg-options
    for item in options:
        key, val = item.split('=', 1)
        parsed[key] = DictAction._parse_iterable(val)
    cfg.merge_from_dict(parsed)
    return cfg


def build(cfg):
    init_default_scope(cfg.default_scope)
    from mmengine.registry import MODELS
    try:
        return MODELS.build(cfg.model)
    finally:
        DefaultScope._instance_dict.clear()


def kind(path):
    name = osp.basename(path)
    return 'adn' if '_adn' in name else 'base' if '-base' in name else 'plain'


def depth(path):
    return 101 if 'r101' in osp.basename(path) or 'resnet101' in osp.basename(path) else 50


def test_every_shipped_config_is_here():
    names = sorted(osp.basename(p) for p in IMAGENET + DETECTION)
    expected = sorted(
        [f'resnet{d}{k}_8xb32_in1k.py' for d in (50, 101) for k in ('', '_adn', '-base')] + [
            f'{det}_rcnn_r{d}{k}_fpn_1x_coco.py' for det in ('faster', 'mask') for d in (50, 101)
            for k in ('', '_adn', '-base')
        ])
    assert names == expected


@pytest.mark.parametrize('path', IMAGENET + DETECTION, ids=osp.basename)
def test_config_builds_its_model(path):
    cfg = load(path)
    model = build(cfg)
    bb = model.backbone
    d = depth(path)
    assert bb.depth == d
    blocks = tuple(len(getattr(bb, n)) for n in bb.res_layers)
    shared = tuple(default_num_shared_blocks(n) for n in BLOCKS[d])
    if kind(path) == 'adn':
        assert type(bb).__name__ == 'ResNetADN' and bb.skip_str == 'FFFF'
        assert blocks == BLOCKS[d] and bb.num_shared_blocks == shared
        assert 'mmadn' in cfg.custom_imports.imports
    elif kind(path) == 'base':  # a plain ResNet of the base-net's depth
        assert type(bb).__name__ == 'StageResNet' and blocks == shared
        assert shared == {50: (2, 2, 3, 2), 101: (2, 2, 12, 2)}[d]
    else:
        assert type(bb).__name__ == 'ResNet' and blocks == BLOCKS[d]
    is_det = path in DETECTION
    assert type(model).__name__ == ('ImageClassifier' if not is_det else
                                    'MaskRCNN' if 'mask_rcnn' in path else 'FasterRCNN')
    if is_det:  # ImageNet-initialised backbone, as mmdet does
        assert bb.frozen_stages == 1 and bb.norm_eval is True
        assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                                   checkpoint=f'torchvision://resnet{d}')
        assert not any(p.requires_grad for p in bb.layer1.parameters())
    else:
        assert bb.norm_eval is False and bb.frozen_stages == -1
        assert model.head.fc.out_features == 1000


def _lr_by_epoch(cfg, optimizer, epochs):
    scheds = cfg.param_scheduler
    scheds = scheds if isinstance(scheds, list) else [scheds]
    epoch_scheds = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in scheds
        if s.get('by_epoch', True)
    ]
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        for s in epoch_scheds:
            s.step()
    return lrs


def _weight_decays(cfg, model):
    init_default_scope(cfg.default_scope)
    try:
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    finally:
        DefaultScope._instance_dict.clear()
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    return wrapper.optimizer, decay


@pytest.mark.parametrize('path', IMAGENET, ids=osp.basename)
def test_imagenet_recipe(path):
    cfg = load(path)
    # 8 GPUs x 32 images = 256 per step, lr 0.1 per 256 images
    assert cfg.train_dataloader.batch_size == 32 and '8xb32' in path
    assert cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_cfg.by_epoch and cfg.train_cfg.max_epochs == 150
    if path.endswith('resnet101_8xb32_in1k.py') or 'resnet50' in path:
        model = build(cfg)  # one build per recipe is enough for the optimizer check
        optimizer, decay = _weight_decays(cfg, model)
        assert type(optimizer).__name__ == 'SGD'
        assert optimizer.defaults['momentum'] == 0.9
        assert decay['backbone.conv1.weight'] == 1e-4
        assert decay['head.fc.weight'] == 1e-4
        assert decay['backbone.bn1.weight'] == 0 and decay['head.fc.bias'] == 0
        if kind(path) == 'adn':
            assert decay['backbone.layer1.0.bn1_skip.weight'] == 0
        lrs = _lr_by_epoch(cfg, optimizer, 150)
        assert lrs[0] == pytest.approx(0.1) and lrs[59] == pytest.approx(0.1)
        assert lrs[60] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.01)
        assert lrs[100] == pytest.approx(1e-3) and lrs[140] == pytest.approx(1e-4)
        assert lrs[149] == pytest.approx(1e-4)
    if kind(path) == 'adn':
        assert cfg.val_cfg == dict(type='SubnetValLoop', skips=('super', 'base'))
        assert cfg.default_hooks.checkpoint.save_best == 'FFFF/accuracy/top1'
        hook, = cfg.custom_hooks
        assert hook.type == 'SubPathSpecializationHook' and hook.alpha == 0.5
        assert hook.feat_kd.mode == 'pooled' and hook.logit_kd.topk == 500


@pytest.mark.parametrize('path', DETECTION, ids=osp.basename)
def test_detection_recipe(path):
    cfg = load(path)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    assert cfg.train_cfg.val_interval == 1
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', 0.02, 0.9, 1e-4)
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch and warmup.end == 500
    assert steps.type == 'MultiStepLR' and steps.by_epoch and steps.milestones == [8, 11]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=opt.lr)
    lrs = _lr_by_epoch(cfg, optimizer, 12)
    assert lrs[7] == pytest.approx(0.02) and lrs[8] == pytest.approx(2e-3)
    assert lrs[10] == pytest.approx(2e-3) and lrs[11] == pytest.approx(2e-4)
    if kind(path) == 'adn':
        hook, = cfg.custom_hooks
        assert hook.type == 'SubPathSpecializationHook' and hook.alpha == 0.5
        assert (cfg.val_cfg.type, cfg.val_cfg.skips) == ('SubnetValLoop', ('super', 'base'))
        assert cfg.default_hooks.checkpoint.save_best == 'FFFF/coco/bbox_mAP'
    else:
        assert not cfg.get('custom_hooks') and cfg.val_cfg.type == 'ValLoop'


@pytest.mark.parametrize('det', ['faster', 'mask'])
def test_detection_backbone_from_an_imagenet_adn_checkpoint(det, tmp_path):
    """The documented start: --cfg-options model.backbone.init_cfg.checkpoint=PATH
    model.backbone.init_cfg.prefix=backbone. with a checkpoint of the ImageNet ADN config
    (depth 18 here) loads every norm, the skip norms with their own (trained) values."""
    cls_cfg = load(osp.join(ROOT, 'configs', 'imagenet', 'resnet50_adn_8xb32_in1k.py'),
                   ['model.backbone.depth=18', 'model.head.in_channels=512'])
    classifier = build(cls_cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in classifier.backbone.parameters():
            p.uniform_(-1, 1)  # the skip norms now differ from their partners
    ckpt = str(tmp_path / 'resnet18_adn_in1k.pth')
    torch.save({'state_dict': classifier.state_dict(), 'meta': {}}, ckpt)

    cfg = load(osp.join(ROOT, 'configs', f'{det}_rcnn_r50_adn_fpn_1x_coco.py'), [
        'model.backbone.depth=18', 'model.neck.in_channels=[64,128,256,512]',
        f'model.backbone.init_cfg.checkpoint={ckpt}', 'model.backbone.init_cfg.prefix=backbone.'
    ])
    detector = build(cfg)
    detector.backbone.init_weights()
    expected = classifier.backbone.state_dict()
    got = detector.backbone.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not torch.equal(got['layer2.0.bn1_skip.weight'], got['layer2.0.bn1.weight'])


ADN_DETECTION = sorted(glob.glob(osp.join(ROOT, 'configs', '*_adn_*coco.py'))) + [
    osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py'),
    osp.join(ROOT, 'configs', 'demo', 'rtmdet_cspnext_adn_demo.py')
]


@pytest.mark.parametrize('path', ADN_DETECTION, ids=osp.basename)
def test_detection_configs_train_with_the_authors_recipe(path):
    """alpha det(super) + (1 - alpha) (det(base) + KD), KD between the global-average-pooled
    FPN outputs (channel softmax, T = 1, KL per image), averaged over the levels: read from
    the hook that the built config makes."""
    from mmengine.registry import HOOKS

    from mmadn.engine.hooks import SubPathSpecializationHook
    from mmadn.models.losses import SubPathKDLoss
    cfg = load(path)
    hook_cfg, = [h for h in cfg.custom_hooks if h.type == 'SubPathSpecializationHook']
    hook = HOOKS.build(copy.deepcopy(hook_cfg))
    assert isinstance(hook, SubPathSpecializationHook)
    loss = hook.distiller
    assert loss.alpha == 0.5 and loss.base_task_loss is True
    assert loss.features == 'neck' and loss.level_reduction == 'mean'
    assert isinstance(loss.feat_kd, SubPathKDLoss)
    assert (loss.feat_kd.mode, loss.feat_kd.temperature, loss.feat_kd.topk) == \
        ('pooled', 1.0, None)
    assert loss.kd_warmup_iters == 0
    # the norms' statistics are frozen, as in mmdet's and the authors' detection training;
    # the real-time detectors train theirs, as mmdet's RTMDet / YOLOX recipes do
    backbone = cfg.model.backbone
    assert backbone.type in ('SwinTransformerADN', 'CSPNeXtADN', 'CSPDarknetADN') \
        or backbone.norm_eval is True
