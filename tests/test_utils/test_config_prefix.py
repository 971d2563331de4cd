"""``_base_ = 'mmadn::...'`` from a config file outside the repository."""
import glob
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

import mmadn  # noqa: F401  (enables the mmadn:: prefix)
from mmadn.models import build_model
from mmadn.utils.config_prefix import config_root, resolve_config, shipped_configs
from ..conftest import ROOT

CONFIGS = osp.join(ROOT, 'configs')


def _user_config(tmp_path, base, body='', name='user_cfg.py'):
    path = tmp_path / name
    path.write_text(f'_base_ = {base!r}\n' + textwrap.dedent(body))
    return str(path)


def _as_dict(cfg):
    return cfg._cfg_dict.to_dict()


def test_every_shipped_config_resolves_to_its_file(tmp_path):
    shipped = shipped_configs()
    expected = sorted(
        osp.relpath(p, CONFIGS) for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True))
    assert shipped == expected and len(shipped) >= 25
    user = str(tmp_path / 'user_cfg.py')
    for rel in shipped:
        # what Config.fromfile does with each `_base_` entry: (file, scope)
        # (an editable install resolves through the mmadn/.mim/configs link)
        path, scope = Config._get_cfg_path('mmadn::' + rel, user)
        assert osp.realpath(path) == osp.realpath(osp.join(CONFIGS, rel)) and scope is None


def test_detection_config_without_folder(tmp_path):
    user = _user_config(
        tmp_path, 'mmadn::mask_rcnn_r50_adn_fpn_1x_coco.py', """
        model = dict(backbone=dict(skip='TTFF'))
        train_dataloader = dict(batch_size=1)
        """)
    cfg = Config.fromfile(user)
    direct = Config.fromfile(osp.join(CONFIGS, 'mask_rcnn_r50_adn_fpn_1x_coco.py'))
    direct.merge_from_dict({'model.backbone.skip': 'TTFF', 'train_dataloader.batch_size': 1})
    assert _as_dict(cfg) == _as_dict(direct)  # read as the file itself, plus the overrides
    assert cfg.model.type == 'MaskRCNN' and cfg.model.backbone.type == 'ResNetADN'
    assert cfg.model.backbone.depth == 50 and cfg.model.backbone.skip == 'TTFF'
    assert cfg.custom_hooks[0].type == 'SubPathSpecializationHook'
    assert cfg.val_cfg.type == 'SubnetValLoop' and cfg.train_dataloader.batch_size == 1
    # nothing is scoped to 'mmadn' (mmengine would give an external base's dicts its
    # package as `_scope_`): the modules build in the config's own default scope
    assert '_scope_' not in cfg.custom_hooks[0] and cfg.default_scope == 'mmdet'
    model, _ = build_model(cfg)
    assert type(model).__name__ == 'MaskRCNN' and model.backbone.skip_str == 'TTFF'


def test_classification_config_in_a_folder(tmp_path):
    # imagenet/resnet50_adn_8xb32_in1k.py has a relative base of its own (./resnet50_...)
    user = _user_config(
        tmp_path, 'mmadn::imagenet/resnet50_adn_8xb32_in1k.py', """
        model = dict(backbone=dict(depth=18, skip='TTTT'), head=dict(in_channels=512))
        """)
    cfg = Config.fromfile(user)
    direct = Config.fromfile(osp.join(CONFIGS, 'imagenet', 'resnet50_adn_8xb32_in1k.py'))
    direct.merge_from_dict({
        'model.backbone.depth': 18,
        'model.backbone.skip': 'TTTT',
        'model.head.in_channels': 512
    })
    assert _as_dict(cfg) == _as_dict(direct)
    assert cfg.model.type == 'ImageClassifier' and cfg.default_scope == 'mmpretrain'
    assert cfg.custom_hooks[0].logit_kd.topk == 500
    model, _ = build_model(cfg)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert tuple(logits.shape) == (2, 1000) and model.backbone.skip_str == 'TTTT'


def test_unknown_config_names_the_path_and_close_matches(tmp_path):
    user = _user_config(tmp_path, 'mmadn::mask_rcnn_r50_adn_fpn_1x_cocoo.py')
    with pytest.raises(FileNotFoundError) as err:
        Config.fromfile(user)
    message = str(err.value)
    assert 'mmadn::mask_rcnn_r50_adn_fpn_1x_cocoo.py' in message
    assert 'close matches: mmadn::mask_rcnn_r50_adn_fpn_1x_coco.py' in message
    assert config_root() in message
    with pytest.raises(FileNotFoundError, match='path relative to configs/'):
        resolve_config('mmadn::../setup.py')
    # other packages' prefixes are left to mmengine
    assert Config.fromfile(
        _user_config(tmp_path, 'mmdet::_base_/default_runtime.py',
                     name='mmdet_cfg.py')).default_scope == 'mmdet'


def _fresh_python(code, cwd):
    """``code`` in a new interpreter started outside the repository."""
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


def test_import_mmadn_suffices_and_custom_imports_alone_does_not(tmp_path):
    body = "custom_imports = dict(imports=['mmadn'], allow_failed_imports=False)\n"
    user = _user_config(tmp_path, 'mmadn::demo/resnet18_adn_demo.py', body)
    load = f'from mmengine.config import Config; cfg = Config.fromfile({user!r}); ' \
        'print(cfg.model.backbone.type)'
    ok = _fresh_python('import mmadn; ' + load, str(tmp_path))
    assert ok.returncode == 0 and ok.stdout.strip().endswith('ResNetADN'), ok.stderr[-2000:]
    # mmengine resolves the bases before it reads custom_imports
    alone = _fresh_python(load, str(tmp_path))
    assert alone.returncode != 0
    assert 'mmengine does not support to load mmadn config' in alone.stderr
