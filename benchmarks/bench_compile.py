"""torch.compile of an ADN model at every depth: compiled vs eager latency per depth, the
first call of each depth, the cost of a depth switch, and what dynamo compiled.

    python benchmarks/bench_compile.py [--part cls det] [--threads 1] [--rounds 3]
        [--device cpu|cuda] [--batch 8] [--size 224] [--det-shape 320 320]
        [--backend inductor] [--out benchmarks/results/bench_compile]

Parts: ``cls``, the ResNet-50-ADN ImageClassifier (mmpretrain, 1000 classes) at
``--size`` px, batch ``--batch``; ``det``, the backbone + neck of the demo Mask R-CNN
(configs/demo/mask_rcnn_r18_adn_fpn_demo.py) at ``--det-shape``, batch 1. Both with random
weights in eval mode. Each is compiled with :func:`mmadn.deploy.compile_all_depths`
(``fullgraph=True``), which runs every depth once: ``first call`` is that call (the first
depth's includes the compilation; inductor's on-disk caches are switched off, so it is a
cold compilation). Then every depth is timed compiled and eager, interleaved
(``rounds`` rounds, the order rotated each round; medians). ``switch`` is the median of a
compiled call right after ``set_skip`` to the other end (FFFF <-> TTTT, alternating) over the
median of calls at an unchanged depth (``--switch-rounds`` of each). ``graphs`` and ``eager
fallbacks`` are dynamo's own counters (``unique_graphs``; frames it gave up on, which run
eager). A small CUDA run:
``--device cuda --part cls --batch 8 --rounds 3``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.analysis import measure_latency
from mmadn.deploy import compile_all_depths, dynamo_counts, tensor_forward
from mmadn.models import build_model
from mmadn.models.layers.skip import format_skip

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSIFIER = dict(type='ImageClassifier', backbone=dict(type='ResNetADN', depth=50,
                                                        out_indices=(3, )),
                  neck=dict(type='GlobalAveragePooling'),
                  head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048))
DET_DEMO = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--part', nargs='+', default=['cls', 'det'], choices=['cls', 'det'])
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved timed rounds')
    parser.add_argument('--batch', type=int, default=8, help='classifier batch size')
    parser.add_argument('--size', type=int, default=224, help='classifier input side')
    parser.add_argument('--det-shape', type=int, nargs=2, default=(320, 320), metavar=('H', 'W'),
                        help='detector input (multiples of 32)')
    parser.add_argument('--switch-rounds', type=int, default=8,
                        help='calls after a switch (and at the same depth) per end')
    parser.add_argument('--backend', default='inductor', help='torch.compile backend')
    parser.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results', 'bench_compile'),
                        help='writes OUT.json and OUT.md')
    return parser.parse_args(argv)


def build(part, device):
    torch.manual_seed(0)
    if part == 'cls':
        cfg = Config(dict(default_scope='mmpretrain', model=CLASSIFIER))
    else:
        cfg = Config.fromfile(DET_DEMO)
        cfg.model.backbone.init_cfg = None
    model, _ = build_model(cfg, device=device)
    return model.eval()


def flat(out):
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in flat(o)]


@torch.no_grad()
def bench_part(part, args):
    device = args.device
    model = build(part, device)
    backbone = model.backbone
    shape = (args.batch, 3, args.size, args.size) if part == 'cls' else \
        (1, 3, *args.det_shape)
    x = torch.randn(*shape, device=device)
    eager = tensor_forward(model)
    skips = [format_skip(s) for s in backbone.subnet_skips()]
    start = dynamo_counts()
    compiled = compile_all_depths(model, x, backend=args.backend)
    end = dynamo_counts()
    diff = 0.0
    for skip in skips:
        backbone.set_skip(skip)
        diff = max(
            diff, max(
                (a - b).abs().max().item() for a, b in zip(flat(compiled(x)), flat(eager(x)))))
    fns = {}
    for skip in skips:
        fns[f'{skip} compiled'] = lambda: compiled(x)
        fns[f'{skip} eager'] = lambda: eager(x)
    times = measure_latency(fns, warmup=0, repeats=args.rounds,
                            setup=lambda name: backbone.set_skip(name.split()[0]))
    # switch cost: calls right after a switch (FFFF <-> TTTT) vs calls at the same depth
    ends = [skips[0], skips[-1]]
    switched = {s: [] for s in ends}
    same = {s: [] for s in ends}
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    with torch.compiler.set_stance('fail_on_recompile'):
        for r in range(2 * args.switch_rounds):
            skip = ends[r % 2]
            for bucket in (switched, same):  # the second call is at the same depth
                backbone.set_skip(skip)
                sync()
                t0 = time.perf_counter()
                compiled(x)
                sync()
                bucket[skip].append(time.perf_counter() - t0)
    after = dynamo_counts()
    rows = []
    for skip in skips:
        c, e = times[f'{skip} compiled'], times[f'{skip} eager']
        rows.append(
            dict(skip=skip, first_call_s=compiled.first_call_s[skip], compiled_ms=c['median_ms'],
                 eager_ms=e['median_ms'], ratio=c['median_ms'] / e['median_ms']))
    return dict(
        part=part, input=list(shape), device=device, backend=args.backend,
        graphs=end['graphs'] - start['graphs'], eager_fallbacks=(end['frames'] - end['frames_ok']) -
        (start['frames'] - start['frames_ok']) + end['gave_up'] - start['gave_up'],
        graphs_after_warmup=after['graphs'] - end['graphs'], max_abs_diff=diff, rows=rows,
        switch={s: statistics.median(switched[s]) / statistics.median(same[s])
                for s in ends})


def table(res):
    name = ('ResNet-50-ADN classifier'
            if res['part'] == 'cls' else 'demo Mask R-CNN R-18-ADN backbone + neck')
    lines = [
        f"**{name}**, input {'x'.join(map(str, res['input']))}, {res['device']}, "
        f"backend {res['backend']}: {res['graphs']} graph(s) compiled for "
        f"{len(res['rows'])} depths, {res['eager_fallbacks']} eager fallback(s), "
        f"{res['graphs_after_warmup']} graph(s) compiled after the warm-up; max |compiled - "
        f"eager| {res['max_abs_diff']:.2g}; switch (after a switch / same depth): " +
        ', '.join(f'{s} {v:.3f}x' for s, v in res['switch'].items()), '',
        '| skip | first call (s) | compiled (ms) | eager (ms) | compiled / eager |',
        '|---|---|---|---|---|'
    ]
    for r in res['rows']:
        lines.append(f"| `{r['skip']}` | {r['first_call_s']:.2f} | {r['compiled_ms']:.1f} | "
                     f"{r['eager_ms']:.1f} | {r['ratio']:.3f} |")
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'--device {args.device}: torch {torch.__version__} sees no CUDA device',
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    # a cold compilation each run: inductor's and AOTAutograd's on-disk caches off
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    where = args.device if args.device != 'cpu' else f'CPU, {args.threads} thread(s)'
    head = (f'bench_compile: torch {torch.__version__}, {where}, {args.rounds} interleaved '
            'rounds (medians)')
    print(head, flush=True)
    results = []
    for part in args.part:
        res = bench_part(part, args)
        results.append(res)
        print(table(res) + '\n', flush=True)
    if args.out:
        os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
        with open(args.out + '.json', 'w') as f:
            json.dump(dict(header=head, results=results), f, indent=1)
        with open(args.out + '.md', 'w') as f:
            f.write(head + '\n\n' + '\n\n'.join(table(r) for r in results) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
