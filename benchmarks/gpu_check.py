"""The checks that need one CUDA GPU, in one run (about 8 minutes at most); started by
``benchmarks/gpu_check.sh``, which documents them. Writes one JSON file and prints a table.

    python benchmarks/gpu_check.py [--out work_dirs/gpu_check]

``--cpu-smoke`` runs the same steps on the CPU with tiny sizes and without AMP, to check the
script itself; its figures mean nothing.
"""
import argparse
import copy
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_DEMO = 'configs/demo/mask_rcnn_r18_adn_fpn_demo.py'
CLS_DEMO = 'configs/demo/resnet18_adn_demo.py'
R50_ADN = 'configs/imagenet/resnet50_adn_8xb32_in1k.py'
# per step: seconds allowed (the sum stays under 8 minutes)
TIMEOUTS = dict(amp_train_det=90, amp_train_cls=60, amp_step=45, bench_cls=90, bench_det=90,
                profile_r50=75)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=osp.join('work_dirs', 'gpu_check'),
                        help='folder of the JSON file and of the runs')
    parser.add_argument('--cpu-smoke', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run(cmd, timeout):
    """Run a tool as a user would; returns (ok, seconds, last lines of its output)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    try:
        proc = subprocess.run([sys.executable] + cmd, cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, f'timed out after {timeout} s'
    tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return proc.returncode == 0, time.perf_counter() - t0, tail


def amp_train(config, work_dir, iters, amp, timeout):
    """``tools/train.py --amp`` for a few iterations; the logged losses must be finite."""
    cmd = [
        'tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        'default_hooks.logger.interval=1', f'default_hooks.checkpoint.interval={iters}'
    ]
    if amp:
        cmd.insert(2, '--amp')
    ok, seconds, tail = run(cmd, timeout)
    result = dict(seconds=round(seconds, 1))
    rows = []
    for path in sorted(glob.glob(osp.join(ROOT, work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    train_rows = [r for r in rows if 'loss' in r]
    losses = [v for r in train_rows for k, v in r.items() if 'loss' in k]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    result.update(iters_logged=len(train_rows), losses_finite=finite)
    if train_rows:
        last = train_rows[-1]
        result.update(first_loss=train_rows[0]['loss'], last_loss=last['loss'],
                      last_loss_kd_feat=last.get('loss_kd_feat'))
    result['val'] = {k: v for r in rows for k, v in r.items() if '/' in k and 'loss' not in k}
    result['ok'] = ok and finite and len(train_rows) == iters
    if not result['ok']:
        result['output_tail'] = tail
    return result


def amp_step(device, amp):
    """One training iteration of the tiny classifier under ``AmpOptimWrapper``, one and two
    backwards from the same weights: the KD losses must be fp32 while the features are
    fp16, and the two steps must agree (the loss scaler scales both backwards)."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    import mmadn  # noqa: F401
    from mmadn.engine.hooks import SubPathSpecializationHook

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cfg = Config.fromfile(osp.join(ROOT, CLS_DEMO))
    cfg.model.backbone.zero_init_residual = False
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.to(device).train()
        g = torch.Generator().manual_seed(0)
        data = dict(
            inputs=[
                torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(8)
            ], data_samples=[DataSample().set_gt_label(k % 4) for k in range(8)])
        init = {n: p.detach().clone() for n, p in model.named_parameters()}
        result, params = {}, {}
        for two_backward in (False, True):
            m = copy.deepcopy(model)
            optim_cfg = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
            if amp:  # a fixed scale: a dynamic one may skip the first step (inf grads)
                optim_cfg.update(type='AmpOptimWrapper', loss_scale=512.0)
            optim = build_optim_wrapper(m, optim_cfg)
            dtypes = {}

            def record_dtype(_module, _inputs, out):
                dtypes.setdefault('features', str(out.dtype))  # returns None: output kept

            handle = m.backbone.layer4.register_forward_hook(record_dtype)
            hook = SubPathSpecializationHook(two_backward=two_backward)
            hook.install(m)
            torch.manual_seed(0)
            log_vars = m.train_step(copy.deepcopy(data), optim_wrapper=optim)
            hook.uninstall()
            handle.remove()
            name = 'two_backward' if two_backward else 'one_backward'
            result[name] = dict(
                features_dtype=dtypes['features'],
                kd_dtypes={k: str(log_vars[k].dtype)
                           for k in ('loss_kd_feat', 'loss_kd_logits')}, losses={
                               k: float(v)
                               for k, v in log_vars.items()
                           })
            params[name] = {n: p.detach() for n, p in m.named_parameters()}
    update = max((params['one_backward'][n] - init[n]).abs().max().item() for n in init)
    diff = max(
        (params['two_backward'][n] - params['one_backward'][n]).abs().max().item() for n in init)
    result['max_update'], result['rel_diff'] = update, diff / max(update, 1e-30)
    finite = all(
        math.isfinite(v) for r in (result['one_backward'], result['two_backward'])
        for v in r['losses'].values())
    fp32_kd = all(d == 'torch.float32' for r in (result['one_backward'], result['two_backward'])
                  for d in r['kd_dtypes'].values())
    fp16_feats = result['two_backward']['features_dtype'] == 'torch.float16'
    result['ok'] = (finite and fp32_kd and (fp16_feats or not amp) and update > 0
                    and result['rel_diff'] < 1e-2)
    return result


def bench(task, device, batch, size, out_json, timeout, repeats):
    cmd = [
        'benchmarks/bench_train_step.py', '--task', task, '--device', device, '--batch',
        str(batch), '--size',
        str(size[0]),
        str(size[1]), '--repeats',
        str(repeats), '--no-rss', '--json', out_json
    ]
    ok, seconds, tail = run(cmd, timeout)
    result = dict(seconds=round(seconds, 1), ok=ok)
    if ok:
        with open(osp.join(ROOT, out_json)) as f:
            result.update(json.load(f))
        result.pop('times_s', None)
    else:
        result['output_tail'] = tail
    return result


def profile(device, batch, size, stem, timeout, repeats):
    cmd = [
        'tools/analysis_tools/profile_subnets.py', R50_ADN, '--device', device, '--batch-size',
        str(batch), '--shape',
        str(size),
        str(size), '--skips', 'FFFF,TTTT', '--repeats',
        str(repeats), '--warmup', '3', '--out', stem
    ]
    ok, seconds, tail = run(cmd, timeout)
    result = dict(seconds=round(seconds, 1), ok=ok)
    if ok:
        with open(osp.join(ROOT, stem + '.json')) as f:
            rows = {r['skip']: r for r in json.load(f)}
        full, base = rows['FFFF'], rows['TTTT']
        g = base['gflops'] / full['gflops']
        t = base['latency_ms'] / full['latency_ms']
        result.update(gflops=dict(FFFF=full['gflops'], TTTT=base['gflops']),
                      latency_ms=dict(FFFF=full['latency_ms'],
                                      TTTT=base['latency_ms']), gflops_ratio=g, latency_ratio=t,
                      cut_ratio=(1 - t) / (1 - g), paper_cut_ratio=0.97)
    else:
        result['output_tail'] = tail
    return result


def _ratios(r, key):
    v = r.get(key) or {}
    if 'plain' not in v:
        return 'n/a'
    return ' / '.join(f"{v[k] / v['plain']:.2f}" for k in ('plain', 'one_backward', 'two_backward'))


def table(report) -> str:
    s = report['steps']
    lines = ['| check | figures | ok |', '|---|---|---|']

    def row(name, text):
        lines.append(f"| {name} | {text} | {'yes' if s[name].get('ok') else 'NO'} |")

    for name in ('amp_train_det', 'amp_train_cls'):
        r = s[name]
        row(
            name, f"{r.get('iters_logged', 0)} iterations, losses finite: "
            f"{r.get('losses_finite')}, loss {r.get('first_loss', float('nan')):.3f} -> "
            f"{r.get('last_loss', float('nan')):.3f}, {r['seconds']} s")
    r = s['amp_step']
    if 'two_backward' in r:
        row(
            'amp_step', f"features {r['two_backward']['features_dtype']}, KD "
            f"{sorted(set(r['two_backward']['kd_dtypes'].values()))}, two vs one backward: "
            f"max diff {r['rel_diff']:.2e} of the update")
    else:
        row('amp_step', r.get('error', 'failed'))
    for name in ('bench_cls', 'bench_det'):
        r = s[name]
        if 'median_s' in r:
            row(
                name, f"batch {r['batch']} at {r['size'][0]}x{r['size'][1]}; plain / one / "
                f"two backward: time {_ratios(r, 'median_s')}, CUDA max allocated "
                f"{_ratios(r, 'cuda_max_allocated_mib')} (plain "
                f"{r.get('cuda_max_allocated_mib', {}).get('plain', float('nan')):.0f} MiB), "
                f"saved tensors {_ratios(r, 'saved_mib')}")
        else:
            row(name, 'failed')
    r = s['profile_r50']
    if 'cut_ratio' in r:
        row(
            'profile_r50', f"TTTT / FFFF: GFLOPs x{r['gflops_ratio']:.3f}, latency "
            f"x{r['latency_ratio']:.3f}: latency cut = {r['cut_ratio']:.2f} x the GFLOPs cut "
            f"(the paper: 0.97)")
    else:
        row('profile_r50', 'failed')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not args.cpu_smoke and not cuda_available():
        print(
            'gpu_check: no CUDA device is available here (torch.cuda.is_available() is '
            'False); run it on a machine with one CUDA GPU', file=sys.stderr)
        return 2
    import torch
    smoke = args.cpu_smoke
    device = 'cpu' if smoke else 'cuda'
    out = args.out
    os.makedirs(osp.join(ROOT, out), exist_ok=True)
    report = dict(device=device if smoke else torch.cuda.get_device_name(), torch=torch.__version__,
                  cpu_smoke=smoke, steps={})
    steps = report['steps']
    iters = 2 if smoke else 20
    t_all = time.perf_counter()
    steps['amp_train_det'] = amp_train(DET_DEMO, osp.join(out, 'amp_det'), iters, not smoke,
                                       TIMEOUTS['amp_train_det'] * (4 if smoke else 1))
    steps['amp_train_cls'] = amp_train(CLS_DEMO, osp.join(out, 'amp_cls'), iters, not smoke,
                                       TIMEOUTS['amp_train_cls'] * (4 if smoke else 1))
    try:
        steps['amp_step'] = amp_step(device, amp=not smoke)
    except Exception as err:  # reported in the table and the JSON, the other steps still run
        steps['amp_step'] = dict(ok=False, error=f'{type(err).__name__}: {err}')
    cls_size, det_size = ((64, 64), (128, 128)) if smoke else ((224, 224), (800, 1333))
    steps['bench_cls'] = bench('cls', device, 2 if smoke else 64, cls_size,
                               osp.join(out, 'bench_cls.json'),
                               TIMEOUTS['bench_cls'] * (4 if smoke else 1), 1 if smoke else 5)
    steps['bench_det'] = bench('det', device, 1 if smoke else 2, det_size,
                               osp.join(out, 'bench_det.json'),
                               TIMEOUTS['bench_det'] * (4 if smoke else 1), 1 if smoke else 5)
    steps['profile_r50'] = profile(device, 2 if smoke else 64, 64 if smoke else 224,
                                   osp.join(out, 'profile_r50'),
                                   TIMEOUTS['profile_r50'] * (4 if smoke else 1),
                                   2 if smoke else 20)
    report['seconds'] = round(time.perf_counter() - t_all, 1)
    report['ok'] = all(r.get('ok') for r in steps.values())
    path = osp.join(ROOT, out, 'gpu_check.json')
    with open(path, 'w') as f:
        json.dump(report, f, indent=1)
    print(f"gpu_check on {report['device']} (torch {report['torch']}), "
          f"{report['seconds']} s{' (CPU smoke run: figures mean nothing)' if smoke else ''}")
    print(table(report))
    for name, r in steps.items():
        if not r.get('ok') and r.get('output_tail'):
            print(f'\n{name} output (last lines):\n{r["output_tail"]}')
    print(f'written: {path}')
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
