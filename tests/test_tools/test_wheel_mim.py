"""A built wheel carries configs/ and tools/ under mmadn/.mim; installed in a temporary venv
(reusing this environment's torch, mmcv, mmdet, ... as ``--system-site-packages`` would),
``mmadn::`` inheritance, ``mim train mmadn`` and ``mim test mmadn`` work from it."""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from ..conftest import ROOT, cls_overrides, det_overrides, read_scalars

SOURCES = ('setup.py', 'README.md', 'model-index.yml', 'metafile.yml', 'requirements', 'mmadn',
           'configs', 'tools')


def _run(args, cwd, env=None, timeout=600):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + '\n' + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """``pip wheel`` of a copy of the source tree (building in place would replace the
    links of an editable install under mmadn/.mim with copies)."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim', '*.egg-info')
    for name in SOURCES:
        path = osp.join(ROOT, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copyfile(path, src / name)
    _run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
        '-q', '-w',
        str(tmp / 'dist'),
        str(src)
    ], cwd=str(tmp))
    (path, ) = glob.glob(str(tmp / 'dist' / 'mmadn-*.whl'))
    return path


@pytest.fixture(scope='module')
def wheel_venv(wheel, tmp_path_factory):
    """A fresh venv with the wheel pip-installed (--no-deps), then this environment's
    site-packages appended to its path (what --system-site-packages does for a system
    Python) so that torch, mmcv, mmdet, mmpretrain and openmim are reused. Returns the
    venv's python and an environment without this checkout on PYTHONPATH."""
    # without this checkout on PYTHONPATH (its mmadn.egg-info would tell pip that mmadn is
    # installed already)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PYTHONNOUSERSITE='1')
    venv = tmp_path_factory.mktemp('venv') / 'env'
    _run([sys.executable, '-m', 'venv', str(venv)], cwd=str(venv.parent), env=env)
    py = str(venv / 'bin' / 'python')
    _run([py, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', wheel], cwd=str(venv.parent),
         env=env)
    site = _run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                cwd=str(venv.parent), env=env).stdout.strip()
    with open(osp.join(site, 'reuse_test_environment.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    return py, site, env


def test_wheel_carries_configs_tools_and_model_index(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        osp.relpath(p, osp.join(ROOT, 'configs'))
        for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    }
    assert {n[len('mmadn/.mim/configs/'):]
            for n in names if n.startswith('mmadn/.mim/configs/')} == configs
    tools = {
        osp.relpath(p, osp.join(ROOT, 'tools'))
        for p in glob.glob(osp.join(ROOT, 'tools', '**', '*'), recursive=True)
        if osp.isfile(p) and '__pycache__' not in p
    }
    assert {n[len('mmadn/.mim/tools/'):]
            for n in names if n.startswith('mmadn/.mim/tools/')} == tools
    assert {
        'mmadn/.mim/tools/train.py', 'mmadn/.mim/tools/test.py', 'mmadn/.mim/tools/dist_train.sh',
        'mmadn/.mim/model-index.yml', 'mmadn/.mim/metafile.yml', 'mmadn/__init__.py'
    } <= names
    assert not any(n.startswith(('tests/', 'benchmarks/', 'configs/', 'tools/')) for n in names)


def test_installed_wheel_holds_real_copies(wheel_venv):
    py, site, env = wheel_venv
    mim_dir = osp.join(site, 'mmadn', '.mim')
    for name in ('configs', 'tools'):  # copies, not links into a source tree
        assert osp.isdir(osp.join(mim_dir, name)) and not osp.islink(osp.join(mim_dir, name))
    with open(osp.join(mim_dir, 'configs', 'mask_rcnn_r50_adn_fpn_1x_coco.py')) as f, \
            open(osp.join(ROOT, 'configs', 'mask_rcnn_r50_adn_fpn_1x_coco.py')) as g:
        assert f.read() == g.read()
    # (mmadn:: bases of the installed package: test_mim_train_detector_from_a_user_config)


def test_mim_train_then_mim_test_classifier(wheel_venv, cls_data_root, tmp_path):
    py, site, env = wheel_venv
    work = str(tmp_path / 'train')
    proc = _run([
        py, '-m', 'mim', 'train', 'mmadn', 'resnet18_adn_demo.py', '--work-dir', work,
        '--cfg-options', *cls_overrides(cls_data_root)
    ], cwd=str(tmp_path), env=env)
    # mim found the config and the training script inside the installed package
    assert osp.join(site, 'mmadn', '.mim', 'configs', 'demo', 'resnet18_adn_demo.py') \
        in proc.stdout
    assert osp.join(site, 'mmadn', '.mim', 'tools', 'train.py') in proc.stdout
    losses = [r for r in read_scalars(work) if 'loss' in r]
    assert [r['step'] for r in losses] == [1, 2] and 'loss_kd_logits' in losses[0]
    ckpt = osp.join(work, 'iter_2.pth')
    proc = _run([
        py, '-m', 'mim', 'test', 'mmadn', 'resnet18_adn_demo.py', '--checkpoint', ckpt,
        '--work-dir',
        str(tmp_path / 'test'), '--skip', 'FFFF,TTTT', '--no-profile', '--cfg-options',
        *cls_overrides(cls_data_root)
    ], cwd=str(tmp_path), env=env)
    (results, ) = glob.glob(str(tmp_path / 'test' / '*' / 'subnet_results.json'))
    rows = json.load(open(results))
    assert list(rows) == ['FFFF', 'TTTT']
    assert all(0 <= r['accuracy/top1'] <= 100 for r in rows.values())


def test_mim_train_detector_from_a_user_config(wheel_venv, det_data_root, tmp_path):
    py, site, env = wheel_venv
    user = tmp_path / 'my_mask_rcnn.py'
    user.write_text("_base_ = 'mmadn::demo/mask_rcnn_r18_adn_fpn_demo.py'\n"
                    "custom_hooks = [dict(type='SubPathSpecializationHook', alpha=0.7)]\n")
    work = str(tmp_path / 'train')
    # one training iteration (validation is the classifier test's part)
    _run([
        py, '-m', 'mim', 'train', 'mmadn',
        str(user), '--work-dir', work, '--cfg-options', *det_overrides(det_data_root, iters=1),
        'train_cfg.val_interval=10'
    ], cwd=str(tmp_path), env=env)
    losses = [r for r in read_scalars(work) if 'loss' in r]
    assert len(losses) == 1 and 'loss_kd_feat' in losses[0] and 'loss_mask' in losses[0]
    assert osp.isfile(osp.join(work, 'iter_1.pth'))
    # the user's override of the inherited hook is what ran
    (cfg_dump, ) = glob.glob(osp.join(work, '*', 'vis_data', 'config.py'))
    assert "alpha=0.7" in open(cfg_dump).read().replace(' ', '')
