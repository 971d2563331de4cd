"""Training that goes wrong loses nothing: a diverging run stops at once and writes no
non-finite checkpoint, a second run in the same work dir is refused, a full disk leaves no
partial file, and a refused --resume leaves the work dir as it was."""
import errno
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

import pytest
import torch

import mmadn  # noqa: F401
from mmadn.engine.runner.resume import find_resume_checkpoint
from mmadn.models import first_nonfinite, load_checkpoint_file
from mmadn.utils.fileio import DirectoryLock, remove_stale_temporaries
from ..conftest import CLS_DEMO, ROOT, cls_overrides

# the learning rate jumps by 1e30 after 3 iterations: the weights blow up at iteration 4
# and the losses of iteration 5 are NaN
DIVERGING = f"""_base_ = [{CLS_DEMO!r}]
param_scheduler = [dict(type='MultiStepLR', milestones=[3], gamma=1e30, by_epoch=False)]
"""

# the write of iter_2.pth waits, its temporary file on disk, until the file GATE exists
PAUSED = r'''
import os, runpy, sys, time
from mmengine.fileio.backends import local_backend
put = local_backend.LocalBackend.put
def paused_put(self, obj, filepath):
    put(self, obj, filepath)
    if 'iter_2.pth' in os.path.basename(str(filepath)):
        while not os.path.exists(os.environ['GATE']):
            time.sleep(0.1)
local_backend.LocalBackend.put = paused_put
sys.argv = ['tools/train.py'] + sys.argv[1:]
runpy.run_path('tools/train.py', run_name='__main__')
'''

# the write of iter_3.pth fails half way with ENOSPC, as on a full disk
DISK_FULL = r'''
import errno, os, runpy, sys
from mmengine.fileio.backends import local_backend
put = local_backend.LocalBackend.put
def full_put(self, obj, filepath):
    if 'iter_3.pth' in os.path.basename(str(filepath)):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
    return put(self, obj, filepath)
local_backend.LocalBackend.put = full_put
sys.argv = ['tools/train.py'] + sys.argv[1:]
runpy.run_path('tools/train.py', run_name='__main__')
'''


def _train(args, script=None, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', **env)
    cmd = [sys.executable] + (['-c', script] if script else ['tools/train.py'])
    return subprocess.Popen(cmd + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _weights(path):
    return load_checkpoint_file(path)['state_dict']


def test_a_diverging_run_stops_and_its_checkpoints_stay_finite(cls_data_root, tmp_path):
    cfg = tmp_path / 'diverging.py'
    cfg.write_text(DIVERGING)
    work = str(tmp_path / 'work')
    opts = cls_overrides(cls_data_root, iters=8) + [
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.max_keep_ckpts=2',
        'default_hooks.checkpoint.save_best=FFFF/accuracy/top1',
        'default_hooks.checkpoint.rule=greater'
    ]
    code, out, err = _finish(_train([str(cfg), '--work-dir', work, '--cfg-options', *opts]))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: training diverged at iteration 5: loss = nan'), err[-2000:]
    assert (f'no checkpoint of these weights was written, and the last checkpoint, '
            f'{work}/iter_4.pth, holds finite weights (continue from it with --resume). '
            'Try a lower learning rate') in last
    assert 'Traceback' not in err
    names = sorted(os.listdir(work))
    assert [n for n in names if n.startswith('iter_')] == ['iter_3.pth', 'iter_4.pth']
    best = [n for n in names if n.startswith('best_')]
    assert len(best) == 1 and not [n for n in names if n.startswith('.tmp-')]
    for name in ['iter_3.pth', 'iter_4.pth'] + best:
        assert first_nonfinite(_weights(osp.join(work, name))) is None
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == f'{work}/iter_4.pth'

    # a non-finite checkpoint written before this check existed is passed over by --resume
    state = load_checkpoint_file(osp.join(work, 'iter_4.pth'))
    state['state_dict']['backbone.conv1.weight'][0, 0, 0, 0] = float('nan')
    state['meta']['iter'] = 5
    torch.save(state, osp.join(work, 'iter_5.pth'))
    path, found, refused = find_resume_checkpoint([work])
    assert path == osp.join(work, 'iter_4.pth')
    assert refused[osp.join(work, 'iter_5.pth')] == (
        f'{work}/iter_5.pth holds weights that are not finite (backbone.conv1.weight (nan)): '
        'it was written after training diverged; continue from an earlier checkpoint')


def test_a_second_run_in_the_same_work_dir_is_refused_and_the_first_is_unharmed(
        cls_data_root, tmp_path):
    work = str(tmp_path / 'work')
    gate = str(tmp_path / 'gate')
    opts = ['--work-dir', work, '--cfg-options'] + cls_overrides(cls_data_root, iters=3)
    first = _train([CLS_DEMO] + opts, PAUSED, GATE=gate)
    deadline = time.time() + 300
    while not (osp.isdir(work) and _temporaries(work)):
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.2)
    # the first run is writing iter_2.pth: a second run in the same work dir is refused
    code, _, err = _finish(_train([CLS_DEMO] + opts))
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f'error: {work} is in use by another training run (process '
                           f'{first.pid} on '), err[-2000:]
    assert line.endswith('wait until it has finished, or use another work dir')
    # ... and its start-up left the first's temporary file alone: the first finishes
    assert _temporaries(work) == [f'.tmp-iter_2.pth.{first.pid}']
    open(gate, 'w').close()
    code, _, err = _finish(first)
    assert code == 0, err[-3000:]
    names = sorted(os.listdir(work))
    assert [n for n in names if n.endswith('.pth')] == ['iter_2.pth', 'iter_3.pth']
    assert not _temporaries(work)
    assert load_checkpoint_file(osp.join(work, 'iter_3.pth'), training=True)['meta']['iter'] == 3
    # once the first run has ended, its lock is gone with it: a new run may take the dir
    DirectoryLock(work).acquire().release()


def _temporaries(folder):
    return [n for n in os.listdir(folder) if n.startswith('.tmp-')]


def test_only_temporaries_of_ended_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        for name in (f'.tmp-iter_2.pth.{dead}', f'.tmp-iter_3.pth.{alive.pid}', 'iter_1.pth'):
            (tmp_path / name).write_bytes(b'x')
        assert remove_stale_temporaries(str(tmp_path)) == [f'.tmp-iter_2.pth.{dead}']
        assert sorted(os.listdir(tmp_path)) == ['.tmp-iter_3.pth.' + str(alive.pid), 'iter_1.pth']
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temporaries(str(tmp_path)) == [f'.tmp-iter_3.pth.{alive.pid}']


def test_a_full_disk_leaves_no_partial_file_and_names_the_intact_checkpoint(
        cls_data_root, tmp_path):
    work = str(tmp_path / 'work')
    opts = ['--work-dir', work, '--cfg-options'] + cls_overrides(cls_data_root, iters=4)
    code, _, err = _finish(_train([CLS_DEMO] + opts, DISK_FULL))
    assert code == 1
    last = err.strip().splitlines()[-1]
    free = shutil.disk_usage(work).free / 2**20
    size = osp.getsize(osp.join(work, 'iter_2.pth')) / 2**20
    assert last.startswith(f'error: could not write checkpoint {work}/iter_3.pth: '
                           f'No space left on device ('), err[-2000:]
    assert (f'MiB free in {work}, a checkpoint needs about {size:.1f} MiB (the size of '
            f'{work}/iter_2.pth)); the partial file was removed and {work}/iter_2.pth is '
            'intact') in last
    shown_free = float(last.split('No space left on device (')[1].split(' MiB')[0])
    assert abs(shown_free - free) < 0.1 * free + 50
    assert not [n for n in os.listdir(work) if n.startswith('.tmp-')]
    assert [n for n in sorted(os.listdir(work))
            if n.endswith('.pth')] == ['iter_1.pth', 'iter_2.pth']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == f'{work}/iter_2.pth'
    assert find_resume_checkpoint([work])[0] == osp.join(work, 'iter_2.pth')
    assert errno.ENOSPC  # the fault injected above


def test_a_refused_resume_leaves_the_config_dump_of_the_run(cls_data_root, tmp_path):
    work = tmp_path / 'work'
    opts = ['--work-dir', str(work), '--cfg-options'] + cls_overrides(cls_data_root, iters=1)
    code, _, err = _finish(_train([CLS_DEMO] + opts))
    assert code == 0, err[-2000:]
    dump = work / osp.basename(CLS_DEMO)
    before = dump.read_bytes()
    # the same config with another split no longer fits the checkpoint: refused
    code, _, err = _finish(
        _train([CLS_DEMO, '--resume'] + opts +
               ['model.backbone.num_shared_blocks=[1,1,1,1]', 'model.backbone.depth=34']))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith('error: checkpoint '), err[-2000:]
    assert dump.read_bytes() == before


def test_unreadable_training_data_is_named(det_data_root, tmp_path):
    from mmengine.config import Config

    from mmadn.engine.launch import check_training_data, explain_data_error
    from ..conftest import DET_DEMO, det_overrides
    root = tmp_path / 'data'
    shutil.copytree(det_data_root, root)
    options = dict(o.split('=', 1) for o in det_overrides(str(root)))
    cfg = Config.fromfile(DET_DEMO)
    cfg.merge_from_dict({k: v for k, v in options.items() if 'data_root' in k or 'ann' in k})
    assert check_training_data(cfg) == 16  # every training image starts as a PNG
    assert check_training_data(cfg, max_images=10) == 0  # larger sets: not image by image
    images = sorted(os.listdir(root / 'train'))
    (root / 'train' / images[2]).write_text('<html>not an image</html>')
    with pytest.raises(ValueError) as info:
        check_training_data(cfg)
    assert str(info.value) == (
        f'1 training image(s) of {root}/annotations/instances_train.json are no image '
        f'files ({root}/train/{images[2]}): replace them or remove them from the '
        'annotations')
    # one that starts as a PNG but is cut short fails only when it is decoded: named then
    image = f'{root}/train/{images[3]}'
    message = explain_data_error(cfg, AssertionError(f'failed to load image: {image}'))
    assert message == (f'the image {image} could not be read (not a decodable image): '
                       'replace it or remove it from the annotations')
    ann = root / 'annotations' / 'instances_val.json'
    ann.write_text(ann.read_text()[:100])
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(ann.read_text())
    message = explain_data_error(cfg, info.value)
    assert message == (f'{ann} is not valid JSON (Expecting value at line 1, column 101): '
                       'expected a COCO-format annotation file')
    assert explain_data_error(cfg, RuntimeError('other')) is None
