"""Latency of an exported static sub-network against the adaptive model at that depth, and
of the dynamic-depth ONNX file against the static ONNX file of each depth.

    python benchmarks/bench_export.py [--skip TTTT] [--size 224] [--batch 1 4]
        [--repeats 30] [--threads 1] [--device cpu]
    python benchmarks/bench_export.py --onnx [--skips all] [--size 224] [--repeats 10]
        [--threads 1] [--openvino] [--onnx-dir work_dirs/bench_export]

``--onnx``: the same classifier exported once with the depth as an input
(``export_onnx.py --skip dynamic``) and once per depth as a static file
(``export_onnx.py --skip TTFF``); both run on ONNX Runtime's CPU provider (``--threads``
intra-op threads), batch 1, each depth's two runs interleaved (the order alternating each
round), medians. Prints each depth's dynamic / static latency ratio, the largest output
difference (dynamic against static file; with ``--openvino`` also OpenVINO against ONNX
Runtime) and the file sizes (dynamic / static super-net).
``--openvino`` (the optional ``openvino`` package) also times OpenVINO's CPU runtime on the
dynamic file, in the same rounds.

ResNet-50-ADN ImageClassifier (mmpretrain, 1000 classes): the adaptive model switched to
``--skip`` against the plain static model tools/deployment/export_subnet.py writes for it
(StageResNet, skip norms in the plain slots, skipped blocks gone). For each batch size both
are timed interleaved (A B A B ..., mmadn.analysis.measure_latency); medians, quartiles and
the ratio static / adaptive are printed (below 1: the static model is faster).
"""
import argparse
import os
import os.path as osp
import statistics
import time

import numpy as np
import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.analysis import measure_latency
from mmadn.deploy import (build_model, export_onnx, export_onnx_dynamic, export_static,
                          max_abs_diff, num_params)
from mmadn.models.layers.skip import format_skip, resolve_skips

CLASSIFIER = dict(type='ImageClassifier', backbone=dict(type='ResNetADN', depth=50,
                                                        out_indices=(3, )),
                  neck=dict(type='GlobalAveragePooling'),
                  head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--skip', default='TTTT',
                        help="the exported sub-network, e.g. 'TTTT' (default) or 'TTFF'")
    parser.add_argument('--size', type=int, default=224, help='input side (default 224)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 4],
                        help='batch sizes, each measured on its own (default 1 4)')
    parser.add_argument('--repeats', type=int, default=30,
                        help='timed interleaved rounds per batch size (default 30)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--onnx', action='store_true',
                        help='dynamic-depth ONNX file vs static ONNX files, per depth')
    parser.add_argument('--skips', default='all',
                        help="with --onnx: the depths, 'all' (default) or e.g. FFFF,TTFF,TTTT")
    parser.add_argument('--openvino', action='store_true',
                        help='with --onnx: also time OpenVINO (CPU) on the dynamic file')
    parser.add_argument('--onnx-dir', default=osp.join('work_dirs', 'bench_export'),
                        help='where the ONNX files are written')
    return parser.parse_args(argv)


def ort_session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def openvino_runner(path, threads):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), 'CPU', {
        'INFERENCE_NUM_THREADS': threads,
        'INFERENCE_PRECISION_HINT': 'f32'
    })
    request = compiled.create_infer_request()
    return lambda x, flags: request.infer({0: x, 1: flags})


def bench_onnx(args, adaptive, cfg):
    """The dynamic-depth file against each depth's static file, on ONNX Runtime."""
    os.makedirs(args.onnx_dir, exist_ok=True)
    backbone = adaptive.backbone
    skips = [format_skip(s) for s in resolve_skips(args.skips, backbone.num_skippable_stages)]
    dyn_file = osp.join(args.onnx_dir, 'resnet50_adn_dynamic.onnx')
    t0 = time.perf_counter()
    export_onnx_dynamic(adaptive, dyn_file, shape=(args.size, args.size))
    dyn_s = time.perf_counter() - t0
    static_files = {}
    for skip in dict.fromkeys(['FFFF'] + skips):
        static_cfg, state = export_static(cfg, adaptive, skip)
        static, _ = build_model(static_cfg)
        static.load_state_dict(state, strict=True)
        static_files[skip] = osp.join(args.onnx_dir, f'resnet50_adn_{skip}.onnx')
        export_onnx(static, static_files[skip], shape=(args.size, args.size))
    dyn = ort_session(dyn_file, args.threads)
    static = {s: ort_session(static_files[s], args.threads) for s in skips}
    ov = openvino_runner(dyn_file, args.threads) if args.openvino else None
    x = np.random.RandomState(0).randn(1, 3, args.size, args.size).astype(np.float32)
    flags = {s: np.array([c == 'T' for c in s]) for s in skips}
    diffs = {}
    for s in skips:
        ours = dyn.run(None, {'input': x, 'skip': flags[s]})[0]
        diffs[s] = float(np.abs(ours - static[s].run(None, {'input': x})[0]).max())
        if ov is not None:
            out = next(iter(ov(x, flags[s]).values()))
            diffs[s] = max(diffs[s], float(np.abs(out - ours).max()))
    runners = {
        'dynamic': lambda s: dyn.run(None, {
            'input': x,
            'skip': flags[s]
        }),
        'static': lambda s: static[s].run(None, {'input': x})
    }
    if ov is not None:
        runners['openvino'] = lambda s: ov(x, flags[s])
    times = {(s, k): [] for s in skips for k in runners}
    names = list(runners)
    for r in range(args.warmup + args.repeats):
        for s in skips:
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                t = time.perf_counter()
                runners[k](s)
                if r >= args.warmup:
                    times[(s, k)].append(time.perf_counter() - t)
    size = osp.getsize(dyn_file) / osp.getsize(static_files['FFFF'])
    print(f'ResNet-50-ADN classifier, {args.size} px, batch 1, ONNX Runtime CPU '
          f'({args.threads} thread(s)), torch {torch.__version__}; {args.repeats} interleaved '
          f'rounds after {args.warmup} warm-up rounds; dynamic export {dyn_s:.0f} s')
    print(f'file sizes: dynamic {osp.getsize(dyn_file) / 2**20:.1f} MiB, static FFFF '
          f'{osp.getsize(static_files["FFFF"]) / 2**20:.1f} MiB (dynamic / static super-net '
          f'{size:.3f})')
    ov_head = ' OpenVINO, dynamic (ms) | OpenVINO / ORT dynamic |' if ov else ''
    print(f'| skip | ORT static (ms) | ORT dynamic (ms) | dynamic / static |{ov_head} '
          'max abs diff |')
    print('|---|---|---|---|' + ('---|---|' if ov else '') + '---|')
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    worst = 0.0
    for s in skips:
        ratio = med[(s, 'dynamic')] / med[(s, 'static')]
        worst = max(worst, ratio)
        ov_cols = (f" {med[(s, 'openvino')]:.1f} | "
                   f"{med[(s, 'openvino')] / med[(s, 'dynamic')]:.3f} |") if ov else ''
        print(
            f"| `{s}` | {med[(s, 'static')]:.1f} | {med[(s, 'dynamic')]:.1f} | {ratio:.3f} |"
            f'{ov_cols} {diffs[s]:.2g} |', flush=True)
    print(f'largest dynamic / static ratio: {worst:.3f}')


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config(dict(default_scope='mmpretrain', model=CLASSIFIER))
    adaptive, _ = build_model(cfg, device=args.device)
    if args.onnx:
        return bench_onnx(args, adaptive.eval(), cfg)
    static_cfg, state = export_static(cfg, adaptive, args.skip)
    static, _ = build_model(static_cfg, device=args.device)
    static.load_state_dict(state, strict=True)
    adaptive.backbone.set_skip(args.skip)
    skip = adaptive.backbone.skip_str
    where = args.device if args.device != 'cpu' else f'CPU, {args.threads} thread(s)'
    print(f'ResNet-50-ADN classifier at {skip} vs. its static export (stage blocks '
          f'{tuple(static.backbone.stage_block_counts)}), {args.size} px, {where}, torch '
          f'{torch.__version__}; {args.repeats} interleaved runs each after {args.warmup} '
          'warm-up runs')
    print(f'parameters: adaptive {num_params(adaptive) / 1e6:.2f} M, static '
          f'{num_params(static) / 1e6:.2f} M')
    print('| batch | max abs diff | adaptive median (p25-p75) | static median (p25-p75) '
          '| static / adaptive |')
    print('|---|---|---|---|---|')
    for batch in args.batch:
        x = torch.randn(batch, 3, args.size, args.size, device=args.device)
        diff = max_abs_diff(adaptive, static, x)
        fns = {
            'adaptive': lambda: adaptive(x, mode='tensor'),
            'static': lambda: static(x, mode='tensor')
        }
        times = measure_latency(fns, warmup=args.warmup, repeats=args.repeats)
        a, s = times['adaptive'], times['static']
        print(
            f'| {batch} | {diff:.2g} | {a["median_ms"]:.1f} ms ({a["p25_ms"]:.1f}-'
            f'{a["p75_ms"]:.1f}) | {s["median_ms"]:.1f} ms ({s["p25_ms"]:.1f}-'
            f'{s["p75_ms"]:.1f}) | {s["median_ms"] / a["median_ms"]:.3f} |', flush=True)


if __name__ == '__main__':
    main()
