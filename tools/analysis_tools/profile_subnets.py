"""GFLOPs, parameters and latency of every sub-network of an ADN model.

    python tools/analysis_tools/profile_subnets.py CONFIG [--checkpoint CKPT]
        [--shape H W] [--batch-size B] [--device cpu|cuda] [--out FILE]
        [--skips all|FFFF,TTTT] [--repeats N] [--warmup N]
        [--results subnet_results.json [--metric accuracy/top1]] [--cfg-options ...]

GFLOPs are counted by mmengine.analysis (per image, multiply-adds) for the whole classifier,
or a detector's backbone + neck; latency is the median of ``--repeats`` rounds measured
interleaved over the sub-networks. Writes FILE.json, FILE.csv and FILE.png (latency, or the
accuracy of ``--results`` from ``tools/test.py --skip``, against GFLOPs, Pareto front
marked). The default FILE is ``work_dirs/profile_<config name>/profile``.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

import mmadn  # noqa: F401
from mmadn.analysis import (load_accuracy, plot_profile, profile_forward, profile_subnets,
                            save_profile)
from mmadn.engine.launch import (check_output_path, load_config, non_negative_int, positive_int,
                                 skips_argument)
from mmadn.models import (CHECKPOINT_ERRORS, CheckpointMismatchError, build_model,
                          find_adn_backbone, load_strictly)
from mmadn.models.layers.skip import resolve_skips


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Profile the sub-networks of an ADN model')
    parser.add_argument('config')
    parser.add_argument(
        '--checkpoint', help='weights to load (latency and GFLOPs do not '
        'depend on them; an architecture mismatch is reported)')
    parser.add_argument(
        '--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
        help='input size; default 224 224 for classifiers, 800 1333 for '
        'detectors')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='batch of the latency runs (GFLOPs are per image)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--skips', default='all', type=skips_argument,
                        help="'all' or e.g. FFFF,TTFF,TTTT")
    parser.add_argument('--repeats', type=positive_int, default=20, help='timed rounds')
    parser.add_argument('--warmup', type=non_negative_int, default=3, help='untimed rounds first')
    parser.add_argument('--no-latency', action='store_true', help='GFLOPs and params only')
    parser.add_argument(
        '--results', help='subnet_results.json of tools/test.py --skip: '
        'plot accuracy against GFLOPs')
    parser.add_argument('--metric', help='metric of --results (default accuracy/top1 or '
                        'coco/bbox_mAP)')
    parser.add_argument('--out', help='output path stem (.json/.csv/.png are added)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def _fail(msg: str):
    raise SystemExit(f'error: {msg}')


def build_checked(cfg, checkpoint, device):
    """The model of ``cfg`` with ``checkpoint`` loaded strictly; a config error is one line,
    not the registry's traceback (a checkpoint mismatch is reported by ``main``)."""
    if checkpoint is not None and not osp.isfile(checkpoint):
        _fail(f'checkpoint {checkpoint!r} does not exist')
    try:
        model, _ = build_model(cfg, device=device)
    except Exception as err:
        _fail(f'building the model failed: {type(err).__name__}: '
              f'{str(err).strip().splitlines()[-1]}')
    if checkpoint is not None:
        try:
            load_strictly(model, checkpoint)
        except (CheckpointMismatchError, *CHECKPOINT_ERRORS) as err:
            _fail(str(err))
    return model


def ratio_table(rows, accuracy=None) -> str:
    ref = rows[0]
    header = ['skip', 'GFLOPs', 'params (M)']
    has_lat = 'latency_ms' in ref
    if has_lat:
        header += ['latency (ms)', f'GFLOPs / {ref["skip"]}', f'latency / {ref["skip"]}']
    if accuracy:
        header.append('accuracy')
    body = []
    for r in rows:
        line = [r['skip'], f"{r['gflops']:.3f}", f"{r['params_m']:.2f}"]
        if has_lat:
            line += [
                f"{r['latency_ms']:.2f}", f"{r['gflops'] / ref['gflops']:.3f}",
                f"{r['latency_ms'] / ref['latency_ms']:.3f}"
            ]
        if accuracy:
            line.append(f"{accuracy[r['skip']]:.4g}")
        body.append(line)
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    fmt = lambda cells: '  '.join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return '\n'.join([fmt(header), fmt(['-' * w for w in widths])] + [fmt(b) for b in body])


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        _fail('--device cuda: no CUDA device is available here; use --device cpu')
    try:
        cfg = load_config(args.config, args.cfg_options)
        if args.results:  # read before the model is built; its task is checked after
            load_accuracy(args.results, args.metric)
        if args.out:
            check_output_path(args.out + '.json', '--out', inputs=[args.results or ''])
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    try:
        model = build_checked(cfg, args.checkpoint, args.device)
        backbone = find_adn_backbone(model, user=args.config)
        skips = resolve_skips(args.skips, backbone.num_skippable_stages)
        accuracy, metric = (load_accuracy(args.results, args.metric,
                                          profile_forward(model)[1]) if args.results else
                            (None, None))
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        _fail(str(err).strip().splitlines()[0] if isinstance(err, RuntimeError) else str(err))
    is_cls = profile_forward(model)[1] == 'classifier'
    h, w = args.shape or ((224, 224) if is_cls else (800, 1333))
    inputs = torch.randn(args.batch_size, 3, h, w, device=args.device)
    print(
        f'profiling {len(skips)} sub-networks of {osp.basename(args.config)} at '
        f'{h}x{w}, batch {args.batch_size}, on {args.device}', flush=True)
    rows = profile_subnets(model, inputs, skips, latency=not args.no_latency, warmup=args.warmup,
                           repeats=args.repeats, progress=True)
    for row in rows:
        row['device'] = args.device
    stem = args.out or osp.join('work_dirs',
                                'profile_' + osp.splitext(osp.basename(args.config))[0], 'profile')
    stem = osp.splitext(stem)[0] if stem.endswith(('.json', '.csv', '.png')) else stem
    save_profile(rows, stem + '.json')
    save_profile(rows, stem + '.csv')
    plotted = not (args.no_latency and accuracy is None)
    if plotted:
        front = plot_profile(rows, stem + '.png', accuracy, metric or 'accuracy')
    print(f'\n{rows[0]["scope"]} of {osp.basename(args.config)}, input {h}x{w}:')
    print(ratio_table(rows, accuracy))
    first, last = rows[0], rows[-1]
    if 'latency_ms' in first and first is not last:
        g = last['gflops'] / first['gflops']
        t = last['latency_ms'] / first['latency_ms']
        cut = (1 - t) / (1 - g) if g < 1 else float('nan')
        print(f"\n{last['skip']} / {first['skip']}: GFLOPs x{g:.3f}, latency x{t:.3f} "
              f'(latency cut = {cut:.2f} x the GFLOPs cut; the paper: 0.97 on a GPU)')
    if plotted:
        print(f'Pareto front: {", ".join(front)}')
    print(f'written: {stem}.json, {stem}.csv' + (f', {stem}.png' if plotted else ''))
    return rows


if __name__ == '__main__':
    sys.exit(main() and 0)
