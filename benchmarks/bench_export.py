"""Latency of an exported static sub-network against the adaptive model at that depth.

    python benchmarks/bench_export.py [--skip TTTT] [--size 224] [--batch 1 4]
        [--repeats 30] [--threads 1] [--device cpu]

ResNet-50-ADN ImageClassifier (mmpretrain, 1000 classes): the adaptive model switched to
``--skip`` against the plain static model tools/deployment/export_subnet.py writes for it
(StageResNet, skip norms in the plain slots, skipped blocks gone). For each batch size both
are timed interleaved (A B A B ..., mmadn.analysis.measure_latency); medians, quartiles and
the ratio static / adaptive are printed (below 1: the static model is faster).
"""
import argparse

import torch
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.analysis import measure_latency
from mmadn.deploy import build_model, export_static, max_abs_diff, num_params

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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config(dict(default_scope='mmpretrain', model=CLASSIFIER))
    adaptive, _ = build_model(cfg, device=args.device)
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
