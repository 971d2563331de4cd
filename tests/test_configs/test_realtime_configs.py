"""The RTMDet / YOLOX configs: the ADN configs are mmdet's with the ADN lines added, the
'-base' ones mmdet's with the base-net's blocks, the README's drop-in recipe is the shipped
config; RTMDet-ADN and YOLOX-ADN train with the hook beside mmdet's own hooks (EMA, the
pipeline / mode switch) and tools/test.py evaluates every sub-network of the checkpoint."""
import copy
import glob
import json
import os.path as osp
import re
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.runner import Runner

import mmadn  # noqa: F401
from mmadn.datasets.demo_shapes import DEMO_SHAPES_CLASSES
from ..conftest import ROOT, load_tool, read_scalars

SIZES = {  # name -> (blocks per stage, base-net blocks, flags)
    'rtmdet_s': ((1, 2, 2, 1), (1, 1, 1, 1), 2),
    'rtmdet_m': ((2, 4, 4, 2), (1, 2, 2, 2), 3),
    'rtmdet_l': ((3, 6, 6, 3), (2, 3, 3, 3), 3),
    'yolox_s': ((1, 3, 3, 1), (1, 2, 2, 1), 2),
    'yolox_l': ((3, 9, 9, 3), (2, 5, 5, 3), 3),
}


def _flat(obj, prefix=''):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out or {prefix.rstrip('.'): {}}
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f'{prefix}{i}.'))
        return out or {prefix.rstrip('.'): []}
    return {prefix.rstrip('.'): obj}


def config_diff(a, b):
    """The flattened keys whose values differ between two configs."""
    fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys()
                  if fa.get(k, '<absent>') != fb.get(k, '<absent>'))


def _path(name, kind):
    tail = '8xb32-300e_coco' if name.startswith('rtmdet') else '8xb8-300e_coco'
    sep = {'adn': '_adn_', 'plain': '_', 'base': '-base_'}[kind]
    return osp.join(ROOT, 'configs', f'{name}{sep}{tail}.py')


def test_every_realtime_config_is_here():
    found = {
        osp.basename(p)
        for p in glob.glob(osp.join(ROOT, 'configs', 'rtmdet*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'yolox*.py'))
    }
    assert found == {osp.basename(_path(n, k)) for n in SIZES for k in ('adn', 'plain', 'base')}


def _blocks(backbone):
    return tuple(len(getattr(backbone, n)[-1].blocks) for n in backbone.layers[1:])


@pytest.mark.parametrize('name', list(SIZES))
def test_adn_plain_and_base_configs(name):
    from mmdet.registry import MODELS
    blocks, base, flags = SIZES[name]
    adn, plain, base_cfg = (Config.fromfile(_path(name, k)) for k in ('adn', 'plain', 'base'))
    # the ADN config is mmdet's with the ADN lines: backbone type, hook, loops, checkpoints
    hooks = [h['type'] for h in adn.custom_hooks]
    assert hooks == [h['type'] for h in plain.custom_hooks] + ['SubPathSpecializationHook']
    assert adn.custom_hooks[:-1] == plain.custom_hooks  # EMA, pipeline / mode switch kept
    assert adn.val_cfg.type == 'SubnetValLoop' and adn.val_cfg.skips == ('super', 'base')
    diff = config_diff(plain, adn)
    assert {k.split('.')[0]
            for k in diff
            } == {'model', 'custom_hooks', 'custom_imports', 'val_cfg', 'default_hooks'}
    assert [k for k in diff
            if k.startswith('model.')] == ['model.backbone.skip', 'model.backbone.type']
    assert adn.default_hooks.checkpoint.save_best == 'F' * flags + '/coco/bbox_mAP'
    assert adn.optim_wrapper == plain.optim_wrapper  # AMP: tools/train.py --amp as for mmdet's
    init_default_scope('mmdet')
    try:
        # at 1/8 width (the block counts do not depend on it; a full-width build is slow)
        bb = MODELS.build(dict(adn.model.backbone, init_cfg=None, widen_factor=0.125))
        assert type(bb).__name__.endswith('ADN') and _blocks(bb) == blocks
        assert bb.num_skippable_stages == flags and bb.skip_str == 'F' * flags
        assert bb.static_stage_blocks('base') == base
        # '-base': mmdet's config, its backbone the base-net's static form
        static = bb.static_cfg(adn.model.backbone, 'base')
        assert base_cfg.model.backbone.arch_ovewrite == static['arch_ovewrite']
        assert base_cfg.model.backbone.deepen_factor == 1.0
        assert {
            k.rsplit('.', 2)[0] if 'arch_ovewrite' in k else k
            for k in config_diff(plain, base_cfg) if k.startswith('model.')
        } - {'model.backbone.deepen_factor'} == {'model.backbone.arch_ovewrite'}
        assert _blocks(
            MODELS.build(dict(base_cfg.model.backbone, init_cfg=None, widen_factor=0.125))) == base
    finally:
        DefaultScope._instance_dict.clear()


def test_readme_dropin_recipe_is_the_shipped_config(tmp_path):
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    block = re.search(r"```python\n(_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco\.py'.*?)```",
                      readme, re.S).group(1)
    assert len([line for line in block.splitlines()[1:] if line and line[0] != ' ']) == 4
    path = tmp_path / 'mine.py'
    path.write_text(block)
    mine, shipped = Config.fromfile(str(path)), Config.fromfile(_path('rtmdet_s', 'adn'))
    for key in ('model', 'custom_hooks', 'val_cfg', 'custom_imports', 'train_cfg', 'optim_wrapper',
                'train_dataloader'):
        assert mine[key] == shipped[key], key


# ----------------------------------------------------------------------------------------
# Training with the hook beside mmdet's hooks, then tools/test.py --skip all
# ----------------------------------------------------------------------------------------
def _small(value):
    """640 / 1280 px sizes of mmdet's pipelines -> 64 / 128 px (and YOLOX's borders)."""
    if isinstance(value, dict):
        return type(value)({k: _small(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(_small(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) in (320, 640, 1280):
        return value // 10
    return value


def _demo_dataset(ds, root, split, n):
    ds.update(type='DemoShapesDataset', data_root=root,
              ann_file=f'annotations/instances_{split}.json', data_prefix=dict(img=f'{split}/'),
              indices=n)
    return ds


def small_run_cfg(path, root, work_dir):
    """The config of ``path`` on 4 training and 2 test images of the demo data at 64 px,
    its model narrow, 2-3 short epochs; every hook of the config kept, its switches moved
    to the second epoch."""
    cfg = Config.fromfile(path)
    m = cfg.model
    m.backbone.update(widen_factor=0.125, init_cfg=None)
    m.neck.update(in_channels=[32, 64, 128], out_channels=16)
    m.bbox_head.update(num_classes=len(DEMO_SHAPES_CLASSES), in_channels=16, feat_channels=16)
    if m.data_preprocessor.get('batch_augments'):
        m.data_preprocessor.batch_augments[0].random_size_range = (64, 96)
    root = root.rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = _small(loader.dataset)
        inner = loader.dataset.get('dataset', loader.dataset)  # YOLOX's MultiImageMixDataset
        split, n = ('train', 4) if key == 'train_dataloader' else ('val', 2)
        _demo_dataset(inner, root, split, n)
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = root + 'annotations/instances_val.json'
    yolox = 'yolox' in path
    epochs = 3 if yolox else 2
    cfg.train_cfg.update(max_epochs=epochs, val_interval=epochs)
    cfg.train_cfg.pop('dynamic_intervals', None)
    hooks = []
    for h in cfg.custom_hooks:
        h = _small(h)
        if h.type == 'PipelineSwitchHook':
            h.switch_epoch = 1
        if h.type == 'YOLOXModeSwitchHook':
            h.num_last_epochs = 1  # switched at the second of 3 epochs
        hooks.append(h)
    cfg.custom_hooks = hooks
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1)
    cfg.work_dir = work_dir
    cfg.visualizer.name = work_dir  # one visualizer (and scalars file) per run
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('name', ['rtmdet_m', 'yolox_s'])
def test_adn_config_trains_with_its_hooks_and_tests_every_subnet(name, det_data_root, tmp_path,
                                                                 monkeypatch):
    cfg = small_run_cfg(_path(name, 'adn'), det_data_root, str(tmp_path / 'train'))
    flags = SIZES[name][2]
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    try:
        runner.train()
    finally:
        DefaultScope._instance_dict.clear()
    rows = read_scalars(str(tmp_path / 'train'))
    losses = [r for r in rows if 'loss' in r]
    assert len(losses) == (6 if name.startswith('yolox') else 4)
    assert all({'loss_kd_feat', 'base_loss_cls', 'base_loss_bbox'} <= set(r) for r in losses)
    if name.startswith('yolox'):  # YOLOXModeSwitchHook: the L1 loss from the second epoch
        assert ['loss_l1' in r for r in losses] == [False, False, True, True, True, True]
        assert all('base_loss_l1' in r for r in losses[2:])
    else:  # PipelineSwitchHook: mosaic and mixup off from the second epoch
        kinds = [type(t).__name__ for t in runner.train_dataloader.dataset.pipeline.transforms]
        assert 'CachedMosaic' not in kinds and 'RandomResize' in kinds
    val = [r for r in rows if 'F' * flags + '/coco/bbox_mAP' in r]
    assert len(val) == 1 and 'T' * flags + '/coco/bbox_mAP' in val[0]
    ckpt, = glob.glob(str(tmp_path / 'train' / 'epoch_*.pth'))
    state = torch.load(ckpt)  # weights_only (mmadn's allow-list)
    assert 'ema_state_dict' in state  # EMAHook at work: the saved weights are the averages
    assert state['meta']['adn_backbone']['num_skippable_stages'] == flags
    # every sub-network of the checkpoint through tools/test.py (its main() in this process)
    cfg_path = str(tmp_path / 'small.py')
    cfg.dump(cfg_path)
    monkeypatch.setattr(sys, 'argv', [
        'tools/test.py', cfg_path, ckpt, '--skip', 'all', '--work-dir',
        str(tmp_path / 'test'), '--profile-repeats', '1'
    ])
    try:
        load_tool('tools/test.py').main()
    finally:
        DefaultScope._instance_dict.clear()
    results = json.load(open(glob.glob(str(tmp_path / 'test' / '*' / 'subnet_results.json'))[0]))
    assert len(results) == 2**flags
    assert list(results)[0] == 'F' * flags and list(results)[-1] == 'T' * flags
    assert all(0.0 <= r['coco/bbox_mAP'] <= 1.0 and r['latency_ms'] > 0 for r in results.values())
    assert results['T' * flags]['gflops'] < results['F' * flags]['gflops']
