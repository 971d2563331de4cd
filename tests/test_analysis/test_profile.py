"""FLOPs / params / latency per sub-network, the Pareto front, choosing a depth by budget."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmadn  # noqa: F401
from mmadn.analysis import (count_active_params, count_flops, load_accuracy, measure_latency,
                            pareto_front, plot_profile, profile_subnets, save_profile,
                            select_subnet, switch_to_budget)
from ..conftest import CLS_DEMO, ROOT


def _classifier(depth=18, width=16, **backbone):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ResNetADN', depth=depth, base_channels=width, stem_channels=width,
                          **backbone), neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=width * 8)))


def test_attention_is_counted():

    class Attn(torch.nn.Module):

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 5)
    # q k^T: 2*3 * 10*12*8 multiply-adds; (.) v: 2*3 * 10*12*5
    assert count_flops(Attn(), (q, k, v)) == 2 * 3 * 10 * 12 * (8 + 5)


def test_active_params_leave_out_skipped_blocks_and_the_unused_norm_set():
    model = _classifier()
    x = torch.randn(1, 3, 64, 64)
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    skip_norms = sum(p.numel() for n, p in named.items() if '_skip.' in n)
    assert count_active_params(model, x) == total - skip_norms  # FFFF: plain norms
    model.backbone.set_skip('TTTT')
    skipped = sum(p.numel() for n, p in named.items() if n.split('.')[2] == '1')
    plain_norms_of_shared = sum(
        p.numel() for n, p in named.items()
        if n.startswith('backbone.layer') and n.split('.')[2] == '0' and n.split('.')[3] in ('bn1',
                                                                                             'bn2'))
    assert count_active_params(model, x) == total - skipped - plain_norms_of_shared
    assert model.backbone.skip_str == 'TTTT'  # counting leaves the model as it was


def test_profile_all_subnets_gflops_fall_as_blocks_are_skipped():
    model = _classifier()
    x = torch.randn(2, 3, 64, 64)
    rows = profile_subnets(model, x, repeats=2, warmup=0)
    assert [r['skip'] for r in rows][0] == 'FFFF' and len(rows) == 16
    by = {r['skip']: r for r in rows}
    # skipping one more stage always lowers GFLOPs and parameters
    for a in by:
        for i, c in enumerate(a):
            if c == 'F':
                b = a[:i] + 'T' + a[i + 1:]
                assert by[b]['gflops'] < by[a]['gflops']
                assert by[b]['params_m'] < by[a]['params_m']
    # FFFF is the plain network, per image
    with model.backbone.skipping('FFFF'):
        full = count_flops(model, x[:1], lambda t: model(t, mode='tensor'))
    assert by['FFFF']['gflops'] == pytest.approx(full / 1e9)
    assert all(r['latency_ms'] > 0 and r['batch_size'] == 2 and r['scope'] == 'classifier'
               for r in rows)
    assert model.backbone.skip_str == 'FFFF' and model.training  # restored as it was


def test_measure_latency_interleaves_and_is_at_least_the_sleep():
    calls = []
    fns = {
        n: (lambda n=n: (calls.append(n), time.sleep(0.004 if n == 'b' else 0.001)))
        for n in 'abc'
    }
    out = measure_latency(fns, warmup=1, repeats=4, setup=lambda n: calls.append('+' + n))
    assert calls[:6] == ['+a', 'a', '+b', 'b', '+c', 'c']  # setup before each call
    rounds = [
        ''.join(c for c in calls[i:i + 6] if not c.startswith('+'))
        for i in range(0, len(calls), 6)
    ]
    assert rounds == ['abc', 'bca', 'cab', 'abc', 'bca']  # rotating order
    assert out['b']['median_ms'] >= 4.0 and out['a']['median_ms'] >= 1.0
    assert all(v['runs'] == 4 for v in out.values())
    with pytest.raises(ValueError, match='repeats=0'):
        measure_latency(fns, repeats=0)


def test_pareto_front_and_budget_selection():
    pts = {'A': (1.0, 0.50), 'B': (2.0, 0.60), 'C': (2.5, 0.55), 'D': (3.0, 0.70), 'E': (3.0, 0.65)}
    assert pareto_front(pts) == ['A', 'B', 'D']
    profile = [dict(skip=k, gflops=c, latency_ms=10 * c) for k, (c, _) in pts.items()]
    acc = {k: v for k, (_, v) in pts.items()}
    assert select_subnet(profile, max_gflops=2.6, accuracy=acc) == 'B'
    assert select_subnet(profile, max_gflops=2.6) == 'C'  # no accuracy: most GFLOPs
    assert select_subnet(profile, max_latency_ms=30, accuracy=acc) == 'D'
    assert select_subnet(profile, max_latency_ms=30, max_gflops=2.0, accuracy=acc) == 'B'
    with pytest.raises(ValueError, match=r'no sub-network fits .* the cheapest is A'):
        select_subnet(profile, max_gflops=0.5)
    with pytest.raises(ValueError, match='give a budget'):
        select_subnet(profile)


def test_switch_to_budget_on_a_real_profile():
    model = _classifier()
    rows = profile_subnets(model, torch.randn(1, 3, 64, 64), latency=False)
    by = {r['skip']: r['gflops'] for r in rows}
    budget = by['TTFF'] + 1e-9  # TTFF and its cheaper relatives fit; among them TTFF ties
    skip = switch_to_budget(model, rows, max_gflops=budget)
    assert model.backbone.skip_str == skip and by[skip] <= budget
    assert by[skip] == max(g for g in by.values() if g <= budget)
    acc = {s: (1.0 if s == 'TTTT' else 0.5) for s in by}
    assert switch_to_budget(model, rows, max_gflops=budget, accuracy=acc) == 'TTTT'
    with pytest.raises(ValueError, match='needs a profile with latency'):
        select_subnet(rows, max_latency_ms=5)


def test_results_files_and_plots(tmp_path):
    rows = [
        dict(skip='FF', gflops=2.0, params_m=3.0, latency_ms=9.0),
        dict(skip='TF', gflops=1.5, params_m=2.5, latency_ms=9.5),
        dict(skip='TT', gflops=1.0, params_m=2.0, latency_ms=5.0)
    ]
    save_profile(rows, str(tmp_path / 'p.json'))
    save_profile(rows, str(tmp_path / 'p.csv'))
    assert json.load(open(tmp_path / 'p.json')) == rows
    assert open(tmp_path / 'p.csv').read().splitlines()[0] == 'skip,gflops,params_m,latency_ms'
    with pytest.raises(ValueError, match=r"out='p.txt': expected a .json or .csv"):
        save_profile(rows, 'p.txt')
    # TF is beaten by FF (more GFLOPs at about the same latency) and TT (faster)
    assert plot_profile(rows, str(tmp_path / 'lat.png')) == ['TT', 'FF']
    results = {
        'FF': {
            'accuracy/top1': 80.0
        },
        'TF': {
            'accuracy/top1': 81.0
        },
        'TT': {
            'accuracy/top1': 70.0
        }
    }
    json.dump(results, open(tmp_path / 'r.json', 'w'))
    acc, metric = load_accuracy(str(tmp_path / 'r.json'))
    assert metric == 'accuracy/top1' and acc['TF'] == 81.0
    assert plot_profile(rows, str(tmp_path / 'acc.png'), acc) == ['TT', 'TF']
    assert (tmp_path / 'acc.png').read_bytes()[:4] == b'\x89PNG'
    with pytest.raises(ValueError, match="metric='x' is missing"):
        load_accuracy(results, 'x')


def _profile_tool(*args):
    return subprocess.run([sys.executable, 'tools/analysis_tools/profile_subnets.py', *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_profile_tool_writes_json_csv_png(tmp_path):
    out = tmp_path / 'prof'
    proc = _profile_tool(CLS_DEMO, '--shape', '64', '64', '--repeats', '2', '--warmup', '0',
                         '--skips', 'FFFF,TTFF,TTTT', '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.load(open(str(out) + '.json'))
    assert [r['skip'] for r in rows] == ['FFFF', 'TTFF', 'TTTT']
    assert rows[0]['gflops'] > rows[1]['gflops'] > rows[2]['gflops']
    assert (tmp_path / 'prof.png').stat().st_size > 1000
    assert 'TTTT / FFFF: GFLOPs x' in proc.stdout and 'latency x' in proc.stdout


def _profile_main(*args):
    """The tool's main() in this process: its errors are SystemExit('error: ...'), which
    Python prints as one line, without a traceback."""
    spec = importlib.util.spec_from_file_location(
        'profile_subnets_tool', osp.join(ROOT, 'tools', 'analysis_tools', 'profile_subnets.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exc:
        tool.main(list(args))
    assert isinstance(exc.value.code, str) and exc.value.code.startswith('error: ')
    return exc.value.code


def test_profile_tool_clear_errors(tmp_path):
    # (a skip that does not parse is an argparse error, before the model is built)
    err = _profile_main(CLS_DEMO, '--skips', 'TTF', '--no-latency')
    assert "skip='TTF': expected 4 letters of T/F" in err
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = [{CLS_DEMO!r}]\n"
                     "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18))\n")
    assert 'has no ADN backbone (its backbone is ResNet)' in _profile_main(str(plain))
    err = _profile_main(CLS_DEMO, '--cfg-options', 'model.backbone.depth=19')
    # the upstream ResNet's error (as ResNet(19) raises it)
    assert "building the model failed: KeyError: 'invalid depth 19 for resnet'" in err
    other = _classifier(depth=34, width=64)
    torch.save({'state_dict': other.state_dict()}, tmp_path / 'r34.pth')
    err = _profile_main(CLS_DEMO, '--checkpoint', str(tmp_path / 'r34.pth'), '--no-latency')
    assert 'expects (2, 2, 2, 2) BasicBlock blocks' in err
    assert "checkpoint 'missing.pth' does not exist" in _profile_main(CLS_DEMO, '--checkpoint',
                                                                      'missing.pth')
    if not torch.cuda.is_available():
        assert 'no CUDA device' in _profile_main(CLS_DEMO, '--device', 'cuda')


def test_profile_subnets_takes_the_skips_the_tools_take():
    model = _classifier(width=8)
    x = torch.randn(1, 3, 32, 32)
    rows = profile_subnets(model, x, skips='all', latency=False)
    assert [r['skip'] for r in rows][::5] == ['FFFF', 'FTFT', 'TFTF', 'TTTT']  # 16, in order
    assert len(rows) == 16
    rows = profile_subnets(model, x, skips='super,TTFF', latency=False)
    assert [r['skip'] for r in rows] == ['FFFF', 'TTFF']
    for bad, message in (('', "skips='' names no sub-network"), ([],
                                                                 'skips=[] names no sub-network'),
                         ('FFFF,,TTTT', "skips='FFFF,,TTTT' has an empty entry"),
                         ('FFF', "skip='FFF': expected 4 letters of T/F")):
        with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
            profile_subnets(model, x, skips=bad, latency=False)
