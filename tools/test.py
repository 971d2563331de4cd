"""Evaluate a checkpoint (detection or classification), optionally at a chosen depth.

    python tools/test.py CONFIG CHECKPOINT [--skip TTFF] [--work-dir DIR] [--out FILE]
        [--cfg-options model.backbone.skip=TTFF ...] [--launcher ...]

With --skip, the sub-networks are evaluated from one model (built and loaded once) and one
table gives each one's metrics, GFLOPs, active parameters and latency.
"""
import argparse
import os

from mmengine.config import DictAction

import mmadn  # noqa: F401
from mmadn.utils.launch import build_runner, load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--skip', help="sub-network(s) to evaluate from the one checkpoint: TTFF, 'base', "
        "FFFF,TTFF,TTTT or 'all'; prints one table (metrics, GFLOPs, params, latency) and "
        'writes subnet_results.json/.csv')
    parser.add_argument('--profile-repeats', type=int, default=10,
                        help='with --skip: timed rounds of the latency measurement')
    parser.add_argument('--no-profile', action='store_true',
                        help='with --skip: leave out GFLOPs, params and latency')
    parser.add_argument('--work-dir', help='the dir to save evaluation results and logs')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='save painted predictions into this dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint!r} does not exist')
    # loaded strictly below, before the test loop runs
    cfg.load_from = None
    if args.skip is not None:
        backbone = cfg.model.get('backbone', {})
        if not str(backbone.get('type', '')).endswith('ADN'):
            raise SystemExit(f'--skip {args.skip}: the model backbone '
                             f"{backbone.get('type')!r} is not an ADN backbone")
        cfg.test_cfg = dict(type='SubnetTestLoop', skips=args.skip,
                            profile=not args.no_profile,
                            profile_repeats=args.profile_repeats)
    if args.out is not None:
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    if args.show_dir is not None:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise SystemExit('--show-dir needs a visualization hook in default_hooks')
        vis.draw, vis.test_out_dir = True, args.show_dir
    try:
        runner = build_runner(cfg)
        load_strictly(runner, args.checkpoint)
        runner.test()
    except ValueError as err:  # a bad skip string: the message names it and the form
        if 'skip=' not in str(err):
            raise
        raise SystemExit(f'error: {err}') from None


def load_strictly(runner, checkpoint: str) -> None:
    """A test of half-loaded weights is meaningless: a checkpoint that does not fit the
    model (another architecture, depth or task) stops the run with the mismatch named."""
    try:
        runner.load_checkpoint(checkpoint, map_location='cpu', strict=True)
    except (RuntimeError, ValueError, KeyError) as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        detail = '\n  '.join(ln[:300] for ln in lines[:6])
        raise SystemExit(f'error: checkpoint {checkpoint!r} does not fit the model of this '
                         f'config:\n  {detail}') from None


if __name__ == '__main__':
    main()
