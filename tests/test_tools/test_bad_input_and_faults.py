"""Nothing lost, nothing silent: a killed checkpoint write, --resume, and bad options of the
tools caught before the model is built."""
import glob
import hashlib
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.engine.launch import check_config, load_config
from mmadn.models import load_checkpoint_file
from ..conftest import CLS_DEMO, DET_DEMO, ROOT, cls_overrides, load_tool

# the checkpoint write of iteration 3 is cut in the middle and the process killed, as by
# a SIGKILL / power loss while torch.save's bytes go to disk
KILL_DURING_WRITE = r'''
import os, runpy, signal, sys
from mmengine.fileio.backends import local_backend
put = local_backend.LocalBackend.put
def killed_put(self, obj, filepath):
    if 'iter_3.pth' in os.path.basename(str(filepath)):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return put(self, obj, filepath)
local_backend.LocalBackend.put = killed_put
sys.argv = ['tools/train.py'] + sys.argv[1:]
runpy.run_path('tools/train.py', run_name='__main__')
'''


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def _steps(run_dir):
    with open(osp.join(run_dir, 'vis_data', 'scalars.json')) as f:
        return [json.loads(line)['step'] for line in f if 'loss' in line]


def test_killed_write_keeps_the_last_good_checkpoint_and_resume_continues(cls_data_root, tmp_path):
    work = str(tmp_path / 'work')
    opts = cls_overrides(cls_data_root,
                         iters=3) + ['train_cfg.val_interval=100', 'train_dataloader.batch_size=2']
    proc = subprocess.run([
        sys.executable, '-c', KILL_DURING_WRITE, CLS_DEMO, '--work-dir', work, '--cfg-options',
        *opts, 'default_hooks.checkpoint.max_keep_ckpts=1'
    ], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # the previous checkpoint is whole and still there; the partial write has its own name
    names = sorted(os.listdir(work))
    assert 'iter_2.pth' in names and 'iter_3.pth' not in names
    assert 'iter_1.pth' not in names  # pruned (max_keep_ckpts=1) once iter_2 was in place
    partial = [n for n in names if n.startswith('.tmp-iter_3.pth')]
    assert len(partial) == 1
    good = load_checkpoint_file(osp.join(work, 'iter_2.pth'), training=True)
    assert good['meta']['iter'] == 2
    assert good['meta']['adn_backbone']['num_shared_blocks'] == [1, 1, 1, 1]
    # resume finds it even without mmengine's last_checkpoint pointer
    os.remove(osp.join(work, 'last_checkpoint'))
    sha = _sha(osp.join(work, 'iter_2.pth'))
    proc = subprocess.run([
        sys.executable, 'tools/train.py', CLS_DEMO, '--work-dir', work, '--resume', '--cfg-options',
        *opts, 'default_hooks.checkpoint.max_keep_ckpts=-1'
    ], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'--resume: resuming from {osp.join(work, "iter_2.pth")}' in proc.stdout
    runs = sorted(glob.glob(osp.join(work, '2*')))
    assert _steps(runs[-1]) == [3]  # continued after iteration 2, not from 0
    assert _sha(osp.join(work, 'iter_2.pth')) == sha  # the old checkpoint is intact
    assert load_checkpoint_file(osp.join(work, 'iter_3.pth'), training=True)['meta']['iter'] == 3
    assert not [n for n in os.listdir(work) if n.startswith('.tmp-')]
    assert 'removed 1 partial checkpoint file(s) of an interrupted write' in proc.stdout
    assert open(osp.join(work, 'last_checkpoint')).read() == osp.join(work, 'iter_3.pth')


def _run_main(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [module.__file__] + argv)
    with pytest.raises(SystemExit) as info:
        module.main()
    err = capsys.readouterr().err
    return (str(info.value.code) if not isinstance(info.value.code, int) else '') + err


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('tools/train.py')


def test_train_never_starts_from_zero_over_checkpoints(train_tool, tmp_path, monkeypatch, capsys):
    work = tmp_path / 'work'
    work.mkdir()
    opts = ['--work-dir', str(work)]
    torch.save({'state_dict': {}, 'meta': dict(iter=2, epoch=0)}, work / 'iter_2.pth')
    sha = _sha(work / 'iter_2.pth')
    err = _run_main(train_tool, [CLS_DEMO] + opts, monkeypatch, capsys)
    assert (f'error: {work} already holds 1 checkpoint(s) (iter_2.pth): a run from '
            'iteration 0 would overwrite them. Pass --resume') in err
    assert _sha(work / 'iter_2.pth') == sha
    # --resume with nothing loadable: refuses, naming what it found
    (work / 'iter_2.pth').write_bytes(b'')
    err = _run_main(train_tool, [CLS_DEMO, '--resume'] + opts, monkeypatch, capsys)
    assert f'error: --resume: none of the 1 checkpoint(s) in {work} loads (iter_2.pth: ' \
        f'corrupt or not a checkpoint: {work / "iter_2.pth"} (an empty file' in err
    assert 'nothing was overwritten' in err
    # a truncated file given explicitly
    torch.save({'state_dict': {'w': torch.zeros(10000)}}, tmp_path / 'full.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'full.pth').read_bytes()[:5000])
    err = _run_main(train_tool,
                    [CLS_DEMO, '--resume', str(tmp_path / 'cut.pth')] + opts, monkeypatch, capsys)
    assert f'error: corrupt or not a checkpoint: {tmp_path / "cut.pth"} (a truncated' in err
    err = _run_main(train_tool,
                    [CLS_DEMO, '--resume', str(tmp_path / 'full.pth')] + opts, monkeypatch, capsys)
    assert 'is no training checkpoint (it has no meta.iter / meta.epoch' in err
    err = _run_main(train_tool, [CLS_DEMO, '--resume', 'missing.pth'] + opts, monkeypatch, capsys)
    assert 'error: --resume missing.pth: no such file' in err
    if not torch.cuda.is_available():
        err = _run_main(train_tool, [CLS_DEMO, '--amp'] + opts, monkeypatch, capsys)
        assert "error: --amp: mmengine's AMP (AmpOptimWrapper) needs a GPU" in err
    # --resume that finds nothing says so loudly and starts at 0
    cfg = load_config(CLS_DEMO, work_dir=str(tmp_path / 'empty'))
    train_tool.choose_start(cfg, 'auto')
    assert 'WARNING: --resume found no checkpoint in' in capsys.readouterr().err
    assert not cfg.resume and cfg.load_from is None


def test_options_are_checked_before_the_model_is_built(tmp_path, monkeypatch, capsys):
    test_tool = load_tool('tools/test.py')
    ckpt = tmp_path / 'x.pth'
    torch.save({}, ckpt)
    err = _run_main(test_tool, [CLS_DEMO, str(ckpt), '--skip', ''], monkeypatch, capsys)
    assert "argument --skip: skips='' names no sub-network: expected 'all'" in err
    err = _run_main(test_tool,
                    [CLS_DEMO, str(ckpt), '--skip', 'all', '--profile-repeats', '0'], monkeypatch,
                    capsys)
    assert "argument --profile-repeats: '0': expected an integer >= 1" in err
    profile = load_tool('tools/analysis_tools/profile_subnets.py')
    for argv, message in ((['--shape', '-5', '64'], "argument --shape: '-5': expected an "
                           'integer >= 1'), (['--skips',
                                              ' , '], "argument --skips: skips=' , ' names no "
                                             'sub-network')):
        with pytest.raises(SystemExit):
            profile.main([CLS_DEMO] + argv)
        assert message in capsys.readouterr().err
    demo = load_tool('demo/adaptive_depth_demo.py')
    with pytest.raises(SystemExit):
        demo.main([DET_DEMO, str(ckpt), str(ckpt), '--out', 'x.png', '--skips', 'TTXF'])
    assert "skip='TTXF' does not parse" in capsys.readouterr().err


def _cls_cfg(**options):
    cfg = Config.fromfile(CLS_DEMO)
    cfg.merge_from_dict(options)
    return cfg


def test_config_checks_save_best_hook_and_ddp_unused_parameters():
    check_config(_cls_cfg())
    with pytest.raises(ValueError) as info:
        check_config(_cls_cfg(**{'default_hooks.checkpoint.save_best': 'TTFF/accuracy/top1'}))
    assert str(info.value) == (
        "default_hooks.checkpoint.save_best='TTFF/accuracy/top1': val_cfg.skips=('super', "
        "'base') evaluates ['FFFF', 'TTTT'], never TTFF; use e.g. 'TTTT/accuracy/top1' or add "
        "'TTFF' to val_cfg.skips")
    with pytest.raises(
            ValueError, match="save_best='accuracy/top1': SubnetValLoop reports "
            "every metric with its sub-network's skip as prefix"):
        check_config(_cls_cfg(**{'default_hooks.checkpoint.save_best': 'accuracy/top1'}))
    with pytest.raises(ValueError, match=r"alpha='0.5' \(str\): expected a number in \[0, 1\]"):
        check_config(_cls_cfg(custom_hooks=[dict(type='SubPathSpecializationHook', alpha='0.5')]))
    cfg = _cls_cfg(custom_hooks=[dict(type='SubPathSpecializationHook', super_skip='TFFF')])
    check_config(cfg)  # one process: nothing to say
    cfg.launcher = 'pytorch'
    with pytest.raises(ValueError) as info:
        check_config(cfg)
    msg = str(info.value)
    assert msg.startswith("SubPathSpecializationHook(super_skip='TFFF', base_skip='base') "
                          'under DDP: the skippable blocks of stage 1 (both sub-networks '
                          'skip it) get no gradient')
    assert 'model_wrapper_cfg.find_unused_parameters=True' in msg
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
    check_config(cfg)


class _HalfUsed(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


def test_ddp_stops_at_the_second_iteration_when_a_parameter_gets_no_gradient():
    """What the DDP check above prevents (one gloo process is enough to show it)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    if dist.is_initialized():
        pytest.skip('a process group is already running in this process')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        model = DistributedDataParallel(_HalfUsed())
        model(torch.randn(3, 2)).sum().backward()  # the first iteration passes
        with pytest.raises(RuntimeError, match='Expected to have finished reduction in the '
                           'prior iteration'):
            model(torch.randn(3, 2)).sum().backward()
    finally:
        dist.destroy_process_group()


def test_dist_train_names_a_port_in_use_and_the_fix():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        proc = subprocess.run(['bash', 'tools/dist_train.sh', CLS_DEMO, '2'], cwd=ROOT,
                              env=dict(_env(), PORT=str(port), PYTHON=sys.executable),
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert (f'error: port {port} on 127.0.0.1 is already in use (another distributed run?); '
            f'choose a free one with PORT=, e.g. PORT={port + 1} tools/dist_train.sh') \
        in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_demo_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    import cv2
    import numpy as np
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    clf = MODELS.build(Config.fromfile(CLS_DEMO).model)
    torch.save({'state_dict': clf.state_dict(), 'meta': {}}, tmp_path / 'cls.pth')
    cv2.imwrite(str(tmp_path / 'img.png'), np.zeros((64, 64, 3), np.uint8))
    demo = load_tool('demo/adaptive_depth_demo.py')
    out = tmp_path / 'depths.png'
    with pytest.raises(SystemExit) as info:
        demo.main(
            [DET_DEMO,
             str(tmp_path / 'cls.pth'),
             str(tmp_path / 'img.png'), '--out',
             str(out)])
    DefaultScope._instance_dict.clear()
    assert str(info.value).startswith(f'error: {tmp_path / "cls.pth"} holds another model '
                                      'whose backbone fits this config but whose other parts '
                                      'do not')
    assert not out.exists()  # no picture from random heads


def test_resuming_an_adn_checkpoint_with_a_plain_config_names_the_config(cls_data_root, tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmadn.engine.launch import build_runner
    from mmadn.models import CheckpointMismatchError, adn_backbone_meta
    adn = MODELS.build(Config.fromfile(CLS_DEMO).model)
    ckpt = str(tmp_path / 'iter_2.pth')
    torch.save(
        {
            'state_dict':
            adn.state_dict(),
            'meta':
            dict(iter=2, epoch=0, experiment_name='resnet18_adn_demo_20250101_000000',
                 adn_backbone=adn_backbone_meta(adn))
        }, ckpt)
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = [{CLS_DEMO!r}]\ncustom_hooks = []\n"
                     "val_cfg = dict(_delete_=True, type='ValLoop')\n"
                     "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18))\n")
    from mmengine.config import DictAction
    options = {
        k: DictAction._parse_iterable(v)
        for k, v in (o.split('=', 1) for o in cls_overrides(cls_data_root))
    }
    cfg = load_config(str(plain), options, work_dir=str(tmp_path / 'work'))
    cfg.resume, cfg.load_from = True, ckpt
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'  # swapped in
    runner = build_runner(cfg)
    try:
        with pytest.raises(CheckpointMismatchError) as info:
            runner.train()
    finally:
        DefaultScope._instance_dict.clear()
    assert str(info.value).startswith(
        f'checkpoint {ckpt} was trained with ResNetADN(num_shared_blocks=(1, 1, 1, 1)) (run '
        "'resnet18_adn_demo_20250101_000000'), but this config builds the plain backbone "
        'ResNet: use the ADN config it was trained with')
    assert runner.iter == 0  # nothing trained
