"""Evaluate a checkpoint (detection or classification), optionally at a chosen depth.

    python tools/test.py CONFIG CHECKPOINT [--skip TTFF] [--work-dir DIR] [--out FILE]
        [--cfg-options model.backbone.skip=TTFF ...] [--launcher ...]

With --skip, the sub-networks are evaluated from one model (built and loaded once) and one
table gives each one's metrics, GFLOPs, active parameters and latency. With several
sub-networks, --out preds.pkl writes one file per sub-network: preds_FFFF.pkl, ...
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.model import is_model_wrapper

import mmadn  # noqa: F401
from mmadn.engine.launch import (build_runner, check_output_path, explain_data_error, load_config,
                                 positive_int, skips_argument)
from mmadn.models import CHECKPOINT_ERRORS, CheckpointMismatchError, load_strictly


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--skip', type=skips_argument,
        help="sub-network(s) to evaluate from the one checkpoint: TTFF, 'base', "
        "FFFF,TTFF,TTTT or 'all'; prints one table (metrics, GFLOPs, params, latency) and "
        'writes subnet_results.json/.csv')
    parser.add_argument('--profile-repeats', type=positive_int, default=10,
                        help='with --skip: timed rounds of the latency measurement')
    parser.add_argument('--no-profile', action='store_true',
                        help='with --skip: leave out GFLOPs, params and latency')
    parser.add_argument('--work-dir', help='the dir to save evaluation results and logs')
    parser.add_argument(
        '--out', help='dump the raw predictions to this pickle file (.pkl); '
        'with several --skip sub-networks, one file each, named by skip')
    parser.add_argument('--show-dir', help='save painted predictions into this dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {args.checkpoint!r} does not exist')
    try:
        if args.out is not None:
            check_output_path(args.out, '--out', ('.pkl', '.pickle'), inputs=[args.checkpoint])
        if args.show_dir is not None:
            check_output_path(args.show_dir, '--show-dir', folder=True)
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    # loaded strictly below, before the test loop runs
    cfg.load_from = None
    if args.skip is not None:
        backbone = cfg.model.get('backbone', {})
        if not str(backbone.get('type', '')).endswith('ADN'):
            raise SystemExit(f'--skip {args.skip}: the model backbone '
                             f"{backbone.get('type')!r} is not an ADN backbone")
        cfg.test_cfg = dict(type='SubnetTestLoop', skips=args.skip, profile=not args.no_profile,
                            profile_repeats=args.profile_repeats)
    if args.out is not None:
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(cfg.test_evaluator, dict) else list(
            cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    if args.show_dir is not None:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise SystemExit('--show-dir needs a visualization hook in default_hooks')
        vis.draw, vis.test_out_dir = True, args.show_dir
    try:
        runner = build_runner(cfg)
        # a test of half-loaded weights is meaningless: the checkpoint must fit exactly
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        load_strictly(model, args.checkpoint)
        runner.test()
    except (CheckpointMismatchError, *CHECKPOINT_ERRORS) as err:
        raise SystemExit(f'error: {err}') from None
    except (AssertionError, ValueError) as err:
        # a bad skip string (the message names it and the form), data that cannot be read
        message = str(err) if 'skip=' in str(err) else explain_data_error(cfg, err)
        if message is None:
            raise
        raise SystemExit(f'error: {message}') from None


if __name__ == '__main__':
    main()
