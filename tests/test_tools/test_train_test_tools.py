"""tools/train.py --resume and tools/test.py --skip on the classification demo config."""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from ..conftest import CLS_DEMO, ROOT, cls_overrides, read_scalars, run_tool


def _train(work_dir, data_root, iters, extra=()):
    opts = cls_overrides(data_root, iters) + ['train_cfg.val_interval=100']
    return run_tool([
        'python', 'tools/train.py', CLS_DEMO, '--work-dir', work_dir, *extra, '--cfg-options', *opts
    ])


def test_interrupted_training_resumes_to_the_same_iteration(cls_data_root, tmp_path):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    _train(full, cls_data_root, 4)
    _train(part, cls_data_root, 2)  # "interrupted" after 2 of 4 iterations
    proc = _train(part, cls_data_root, 4, extra=['--resume'])
    assert 'resumed' in (proc.stdout + proc.stderr).lower()
    steps = [r['step'] for r in read_scalars(part) if 'loss' in r]
    assert steps == [1, 2, 3, 4]  # iterations 3 and 4 ran after the resume, nothing twice
    meta_full = torch.load(osp.join(full, 'iter_4.pth'), weights_only=False)['meta']
    meta_part = torch.load(osp.join(part, 'iter_4.pth'))['meta']  # weights_only (mmadn)
    assert meta_part['iter'] == meta_full['iter'] == 4


@pytest.fixture(scope='module')
def cls_ckpt(cls_data_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('cls_ckpt'))
    _train(work, cls_data_root, 2)
    return osp.join(work, 'iter_2.pth')


def test_skip_all_gives_16_rows_and_plain_runs_agree(cls_data_root, cls_ckpt, tmp_path):
    ckpt = cls_ckpt
    run_tool([
        'python', 'tools/test.py', CLS_DEMO, ckpt, '--skip', 'all', '--work-dir',
        str(tmp_path / 'all'), '--cfg-options'
    ] + cls_overrides(cls_data_root))
    path = glob.glob(str(tmp_path / 'all' / '*' / 'subnet_results.json'))[0]
    results = json.load(open(path))
    assert len(results) == 16 and list(results)[0] == 'FFFF' and list(results)[-1] == 'TTTT'
    # GFLOPs, active parameters and latency beside the metrics; skipping lowers the first two
    for a, b in [('FFFF', 'TFFF'), ('TFFF', 'TTFF'), ('TTFF', 'TTTF'), ('TTTF', 'TTTT'),
                 ('FFFF', 'FFFT')]:
        assert results[b]['gflops'] < results[a]['gflops']
        assert results[b]['params_m'] < results[a]['params_m']
    assert all(m['latency_ms'] > 0 for m in results.values())
    assert osp.isfile(path.replace('.json', '.csv'))
    for skip in ('FFFF', 'TTFT'):
        plain = str(tmp_path / f'plain_{skip}')
        run_tool([
            'python', 'tools/test.py', CLS_DEMO, ckpt, '--work-dir', plain, '--cfg-options',
            f'model.backbone.skip={skip}'
        ] + cls_overrides(cls_data_root))
        log = glob.glob(osp.join(plain, '*', '*.json'))[0]
        top1 = json.load(open(log))['accuracy/top1']
        assert top1 == results[skip]['accuracy/top1']


def _run_fail(args):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    return proc.stderr


def test_bad_input_gives_clear_errors(cls_data_root, cls_ckpt):
    err = _run_fail(['tools/test.py', CLS_DEMO, 'missing.pth'])
    assert "checkpoint 'missing.pth' does not exist" in err
    err = _run_fail(['tools/test.py', CLS_DEMO, cls_ckpt, '--skip', 'TTXF', '--cfg-options'] +
                    cls_overrides(cls_data_root))
    assert "skip='TTXF' does not parse: expected a string of T/F letters" in err
    assert 'Traceback' not in err
    err = _run_fail(['tools/test.py', CLS_DEMO, cls_ckpt, '--skip', 'TTF', '--cfg-options'] +
                    cls_overrides(cls_data_root))  # the length is known once the model is
    assert "error: skip='TTF': expected 4 letters of T/F" in err
    assert 'Traceback' not in err


def test_test_tool_refuses_a_checkpoint_of_another_architecture_and_plain_backbones(
        cls_data_root, cls_ckpt, tmp_path):
    from mmpretrain.registry import MODELS
    other = MODELS.build(
        dict(type='ImageClassifier', backbone=dict(type='ResNetADN', depth=34),
             neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', num_classes=4,
                                                               in_channels=512)))
    torch.save({'state_dict': other.state_dict()}, tmp_path / 'r34.pth')
    err = _run_fail(['tools/test.py', CLS_DEMO,
                     str(tmp_path / 'r34.pth'), '--cfg-options'] + cls_overrides(cls_data_root))
    assert "error: checkpoint" in err and 'does not fit the model of this config' in err
    assert 'expects (2, 2, 2, 2) BasicBlock blocks' in err and 'Traceback' not in err
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = [{CLS_DEMO!r}]\n"
                     "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18))\n")
    err = _run_fail(['tools/test.py', str(plain), cls_ckpt, '--skip', 'all'])
    assert "--skip all: the model backbone 'ResNet' is not an ADN backbone" in err


def test_out_keeps_the_predictions_of_every_subnet(cls_data_root, cls_ckpt, tmp_path):
    import pickle
    out = tmp_path / 'preds.pkl'
    proc = run_tool([
        'python', 'tools/test.py', CLS_DEMO, cls_ckpt, '--skip', 'FFFF,TTTT', '--no-profile',
        '--out',
        str(out), '--work-dir',
        str(tmp_path / 'w'), '--cfg-options'
    ] + cls_overrides(cls_data_root))
    assert not out.exists()
    preds = {
        skip: pickle.load(open(tmp_path / f'preds_{skip}.pkl', 'rb'))
        for skip in ('FFFF', 'TTTT')
    }
    assert len(preds['FFFF']) == len(preds['TTTT']) == 16  # 4 val images per class
    scores = {
        skip: torch.stack([torch.as_tensor(p['pred_score']) for p in ps])
        for skip, ps in preds.items()
    }
    assert not torch.allclose(scores['FFFF'], scores['TTTT'])  # two sub-networks' outputs
    assert 'preds_TTTT.pkl' in proc.stdout + proc.stderr
