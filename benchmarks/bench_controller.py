"""Hold a latency budget while the load of the machine changes: a fixed super-net, a fixed
base-net and the depth controller on the same image stream, side by side in one run.

    python benchmarks/bench_controller.py [--size 320] [--budget-ms auto] \
        [--budget-factor 1.3] [--steps 25 60 35] [--cores 0] [--load-procs 1] \
        [--load-nice 4] [--cost gflops] [--checkpoint CKPT] [--results subnet_results.json] \
        [--out benchmarks/results/bench_controller] [--quick]

The demo detector (Mask R-CNN, ResNet-18-ADN, random weights unless ``--checkpoint``;
``--proposals`` / ``--max-dets`` per image) runs through mmdet's DetInferencer on the
demo_shapes validation images, resized to ``--size``.
Every step of the stream runs the same frame three times, once per contender, in an order
rotated each step: FFFF fixed, TTTT fixed, and the controller (``mmadn.runtime``). The
stream has three phases (``--steps``): quiet, loaded, quiet. During the loaded phase this
script runs ``--load-procs`` processes of its own doing matrix products, pinned to the same
cores as the inference (``--cores``), at ``--load-nice`` priority; they are started and
killed by the script, and end by themselves after a deadline in any case. The budget
defaults to ``--budget-factor`` times the super-net's calibrated (unloaded) latency per
call.

Reports, per contender and phase: the share of calls over the budget (all calls, and after
the first ``--settle`` steps of the phase), the p90 latency, and the mean GFLOPs per call
(backbone + neck, ``mmadn.analysis``; or the mean accuracy, given ``--results``); for the
controller, how many calls it took to go down after the load started and back to the
deepest sub-network after it ended. Writes OUT.json, OUT.md and OUT.png.
"""
import argparse
import glob
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from contextlib import contextmanager

import mmcv
import torch
from mmdet.apis import DetInferencer
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.analysis import load_accuracy, profile_subnets
from mmadn.datasets import ensure_demo_shapes
from mmadn.runtime import DepthController, nearest_rank_quantile, plot_controller_log

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py')

# the background load: matrix products (busy for duty x 20 ms of every 20 ms) until
# killed or until its deadline
LOAD_CODE = r'''
import sys, time
import numpy as np
deadline, duty = time.monotonic() + float(sys.argv[1]), float(sys.argv[2])
a = np.random.rand(128, 128)
while time.monotonic() < deadline:
    start = time.monotonic()
    while time.monotonic() - start < 0.02 * duty:
        a = (a @ a) / 128.0
    if duty < 1:
        time.sleep(0.02 * (1 - duty))
'''


@contextmanager
def background_load(procs: int, cores, max_seconds: float, duty: float = 1.0, nice: int = 0):
    """``procs`` processes doing matrix products on ``cores`` (one BLAS thread each, busy
    ``duty`` of the time, at ``nice`` priority) while the block runs; each ends by itself
    after ``max_seconds`` and is killed on exit."""
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    started = []
    try:
        for _ in range(procs):
            proc = subprocess.Popen(
                [sys.executable, '-c', LOAD_CODE,
                 str(max_seconds), str(duty)], env=env, stdout=subprocess.DEVNULL,
                preexec_fn=(lambda: os.nice(nice)) if nice else None)
            started.append(proc)
            if cores is not None and hasattr(os, 'sched_setaffinity'):
                os.sched_setaffinity(proc.pid, cores)
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
        for proc in started:
            proc.wait(timeout=30)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument(
        '--checkpoint', help='weights (default: random init; latency and '
        'GFLOPs do not depend on them)')
    parser.add_argument('--data', default=osp.join(ROOT, 'data', 'demo_shapes'),
                        help='demo_shapes root (generated when missing)')
    parser.add_argument('--size', type=int, default=320, help='frames resized to this')
    parser.add_argument('--proposals', type=int, default=50,
                        help='RPN proposals per image (the demo config: 100)')
    parser.add_argument('--max-dets', type=int, default=5,
                        help='detections (and masks) per image (the demo config: 20)')
    parser.add_argument(
        '--budget-ms', default='auto',
        help="budget per call in ms, or 'auto' (--budget-factor x the "
        "super-net's calibrated latency)")
    parser.add_argument('--budget-factor', type=float, default=1.3)
    parser.add_argument('--steps', type=int, nargs=3, default=[25, 60, 35],
                        metavar=('QUIET', 'LOADED', 'QUIET_AFTER'),
                        help='steps (3 calls each) of the three phases')
    parser.add_argument('--settle', type=int, default=5,
                        help='steps left out at the start of a phase for the settled share')
    parser.add_argument(
        '--cores', default='0', help="cores for the inference and the load ('all': every core "
        'this process may use)')
    parser.add_argument('--load-procs', type=int, default=1,
                        help='background processes during the loaded phase')
    parser.add_argument('--load-duty', type=float, default=1.0,
                        help='share of the time each load process computes (0-1]')
    parser.add_argument(
        '--cost', default='gflops', choices=['gflops', 'latency'],
        help="the controller's front: by GFLOPs (default; a busy machine's "
        'profile latencies are noisy) or by profiled latency')
    parser.add_argument(
        '--load-nice', type=int, default=4,
        help='nice value of the load processes: at 4 the kernel gives the '
        'inference about 1024 / (1024 + 423) of a core they share')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--results', help='subnet_results.json of tools/test.py --skip')
    parser.add_argument('--metric', help='metric of --results')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results',
                                                  'bench_controller'),
                        help='output stem (.json/.md/.png are added)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 128 px, steps 6 10 8, settle 3')
    return parser.parse_args(argv)


def build_inferencer(args):
    cfg = Config.fromfile(args.config)
    cfg.model.test_cfg.rpn.max_per_img = args.proposals
    cfg.model.test_cfg.rcnn.max_per_img = args.max_dets
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (args.size, args.size)
    torch.manual_seed(0)
    return DetInferencer(model=cfg, weights=args.checkpoint, device='cpu', show_progress=False)


def phase_figures(log, budget_ms, gflops, accuracy, first, last, settle_calls):
    calls = log[first:last]
    settled = calls[settle_calls:]
    lat = [c['latency_ms'] for c in calls]
    out = dict(
        calls=len(calls), over_budget=sum(v > budget_ms for v in lat) / len(calls),
        over_budget_settled=sum(c['latency_ms'] > budget_ms
                                for c in settled) / max(1, len(settled)),
        p90_ms=nearest_rank_quantile(lat, 0.9), median_ms=nearest_rank_quantile(lat, 0.5),
        mean_gflops=sum(gflops[c['skip']] for c in calls) / len(calls))
    if accuracy is not None:
        out['mean_accuracy'] = sum(accuracy[c['skip']] for c in calls) / len(calls)
    return out


def markdown(report) -> str:
    b = report['budget_ms']
    lines = [
        f"Budget {b:.1f} ms per call ({report['budget_note']}); {report['steps']} steps "
        f"(quiet / loaded / quiet), 3 calls each, interleaved; settled = without the first "
        f"{report['settle']} steps of each phase. {report['machine']}",
        '',
        '| contender | phase | calls | over budget | over budget, settled | p90 (ms) | '
        'median (ms) | GFLOPs / call |' + (' accuracy / call |' if report['metric'] else ''),
        '|---|---|---|---|---|---|---|---|' + ('---|' if report['metric'] else ''),
    ]
    for name, phases in report['figures'].items():
        for phase, f in phases.items():
            row = (f"| {name} | {phase} | {f['calls']} | {f['over_budget'] * 100:.1f}% | "
                   f"{f['over_budget_settled'] * 100:.1f}% | {f['p90_ms']:.1f} | "
                   f"{f['median_ms']:.1f} | {f['mean_gflops']:.3f} |")
            if report['metric']:
                row += f" {f['mean_accuracy']:.4f} |"
            lines.append(row)
    c = report['controller']
    lines += [
        '', f"Controller: front {' < '.join(c['levels'])}; "
        f"latency per call measured {c['measured_ms']}, expected (fit) "
        f"{c['expected_ms']}; "
        f"{c['switches']} depth changes; down {c['calls_to_go_down']} calls after the "
        f"load started; back at {c['levels'][-1]} {c['calls_to_return']} calls after "
        'it ended.'
    ]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.size, args.steps, args.settle = 128, [6, 10, 8], 3
    cores = None
    if args.cores != 'all' and hasattr(os, 'sched_setaffinity'):
        cores = {int(c) for c in args.cores.split(',')}
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(args.threads)
    data_root = ensure_demo_shapes(args.data)
    files = sorted(glob.glob(osp.join(data_root, 'val', '*.png')))
    frames = [mmcv.imread(f) for f in files]
    inferencer = build_inferencer(args)
    model = inferencer.model
    call = dict(return_datasamples=True, no_save_pred=True)

    # profile (GFLOPs of backbone + neck) on the first frame, unloaded
    _, data = next(iter(inferencer.preprocess(inferencer._inputs_to_list(frames[0]), batch_size=1)))
    inputs = model.data_preprocessor(data, False)['inputs']
    profile = profile_subnets(model, inputs, warmup=1, repeats=3)
    gflops = {r['skip']: r['gflops'] for r in profile}
    accuracy, metric = (load_accuracy(args.results, args.metric) if args.results else (None, None))
    super_skip, base_skip = profile[0]['skip'], profile[-1]['skip']

    # the controller: calibrated on whole calls; the fixed contenders are controllers whose
    # profile holds one sub-network (same timing and log, never a move)
    ctrl = DepthController(inferencer, profile, 1e9, accuracy=accuracy, metric=metric,
                           cost=args.cost)
    calibrated = ctrl.calibrate(frames[0], warmup=2, repeats=5, **call)
    expected_super = ctrl.expected_ms[ctrl.levels[-1]]
    if args.budget_ms == 'auto':
        budget = args.budget_factor * expected_super
        note = (f"{args.budget_factor:g} x the super-net's calibrated "
                f'{expected_super:.1f} ms')
    else:
        budget, note = float(args.budget_ms), 'given'
    ctrl.set_budget(budget)
    rows = {r['skip']: r for r in profile}
    contenders = {
        f'{super_skip} fixed': DepthController(inferencer, [rows[super_skip]], budget,
                                               logger='silent'),
        f'{base_skip} fixed': DepthController(inferencer, [rows[base_skip]], budget,
                                              logger='silent'),
        'controller': ctrl,
    }
    for c in contenders.values():  # every contender's first call is left out of its figures
        c(frames[0], **call)
    start = {n: len(c.log) for n, c in contenders.items()}
    quiet, loaded, after = args.steps
    total = quiet + loaded + after
    names = list(contenders)
    spans = []
    print(f'budget {budget:.1f} ms ({note}); front {" < ".join(ctrl.levels)}; '
          f'{total} steps on cores {sorted(cores) if cores else "all"}')
    load = None
    t_begin = time.perf_counter()
    try:
        for step in range(total):
            if step == quiet:
                load = background_load(args.load_procs, cores, max_seconds=300, duty=args.load_duty,
                                       nice=args.load_nice)
                load.__enter__()
                load_start = time.perf_counter()
            if step == quiet + loaded:
                load.__exit__(None, None, None)
                load = None
                spans.append((load_start, time.perf_counter(), 'background load'))
            frame = frames[step % len(frames)]
            for k in range(len(names)):
                contenders[names[(step + k) % len(names)]](frame, **call)
            if step % 20 == 0:
                print(f'step {step}/{total}: controller at {ctrl.skip}, last '
                      f"{ctrl.log[-1]['latency_ms']:.1f} ms")
    finally:
        if load is not None:
            load.__exit__(None, None, None)
    wall = time.perf_counter() - t_begin

    bounds = dict(quiet=(0, quiet), loaded=(quiet, quiet + loaded),
                  **{'quiet after': (quiet + loaded, total)})
    figures = {}
    for name, c in contenders.items():
        log = c.log[start[name]:]
        figures[name] = {
            p: phase_figures(log, budget, gflops, accuracy, a, b, args.settle)
            for p, (a, b) in bounds.items()
        }
    log = ctrl.log[start['controller']:]
    skips = [c['skip'] for c in log]
    deepest = ctrl.levels[-1]
    down = next((i - quiet for i in range(quiet, quiet + loaded) if skips[i] != deepest), None)
    back = next((i - quiet - loaded for i in range(quiet + loaded, total)
                 if skips[i] == deepest and all(s == deepest for s in skips[i:i + 5])), None)
    report = dict(
        budget_ms=budget, budget_note=note, steps=args.steps, settle=args.settle, size=args.size,
        threads=args.threads, cores=sorted(cores) if cores else 'all', load_procs=args.load_procs,
        wall_s=wall, metric=metric,
        machine=(f'{platform.machine()}, {os.cpu_count()} cores (others work on them too), '
                 f'torch {torch.__version__}, {args.threads} thread(s), inference and load '
                 f"pinned to cores {sorted(cores) if cores else 'all'}, {args.load_procs} "
                 f'load process(es) (nice {args.load_nice}, busy {args.load_duty:g} of the '
                 f'time), frames {args.size} px, {args.proposals} proposals, '
                 f'{args.max_dets} detections, {wall:.0f} s.'), profile=profile, figures=figures,
        controller=dict(levels=ctrl.levels,
                        measured_ms={s: round(calibrated[s], 1)
                                     for s in ctrl.levels}, expected_ms={
                                         s: round(v, 1)
                                         for s, v in ctrl.expected_ms.items()
                                     }, fit=ctrl.fit,
                        switches=ctrl.summary(start['controller'])['switches'],
                        calls_to_go_down=down, calls_to_return=back), logs={
                            n: c.log[start[n]:]
                            for n, c in contenders.items()
                        })
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(args.out + '.md', 'w') as f:
        f.write(text)
    plot_controller_log(
        log, args.out + '.png', budget, ctrl.levels, others={
            n: c.log[start[n]:]
            for n, c in contenders.items() if n != 'controller'
        }, spans=spans, title=f'Mask R-CNN R-18-ADN, {args.size} px, CPU: '
        f'budget {budget:.0f} ms, load in the shaded span')
    print(text)
    print(f'wrote {args.out}.json, .md, .png')
    return report


if __name__ == '__main__':
    main()
