"""Calibrate the skip-aware norms of an ADN checkpoint and save the result.

    python tools/analysis_tools/calibrate_skip_norms.py CONFIG CHECKPOINT --out OUT.pth \
        [--num-batches 32] [--skips base] [--cfg-options ...]

Runs ``--num-batches`` batches of the config's training data through the listed
sub-networks and re-estimates the running statistics of the skip norms they use (see
:func:`mmadn.models.layers.calibrate_skip_norms`); every other weight and buffer is copied
unchanged. The output is a plain checkpoint of the same config (its ``meta`` records the
calibration). Meant for a checkpoint that training has not yet adapted to its skip norms
(e.g. a plain one before training, whose skip norms are copies of their partners): on a
detector trained under frozen norms, new statistics change the function it learned (README,
"Skip-norm calibration", has the measurement).
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, save_checkpoint
from tqdm import tqdm

import mmadn  # noqa: F401
from mmadn.engine.launch import check_output_path, load_config
from mmadn.models import CHECKPOINT_ERRORS, build_model, find_adn_backbone
from mmadn.models.layers import calibrate_skip_norms
from mmadn.utils.fileio import replace_atomically, temporary_path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', required=True, help='the calibrated checkpoint to write')
    p.add_argument('--num-batches', type=int, default=32,
                   help='training batches run through each sub-network (default 32)')
    p.add_argument(
        '--skips', default='base',
        help="comma-separated sub-networks whose skip norms are calibrated "
        "(default 'base': all of them)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
    args = p.parse_args(argv)
    if args.num_batches < 1:
        p.error(f'--num-batches {args.num_batches}: expected an integer >= 1')
    if not args.skips.strip():
        p.error("--skips '': expected sub-networks such as 'base' or 'TTTT,TTFF'")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            raise SystemExit(f'error: {path!r} does not exist')
    try:
        check_output_path(args.out, '--out', ('.pth', ), inputs=[args.checkpoint])
        cfg = load_config(args.config, args.cfg_options)
        model, meta = build_model(cfg, args.checkpoint)
        backbone = find_adn_backbone(model)
    except (TypeError, ValueError, *CHECKPOINT_ERRORS) as err:
        raise SystemExit(f'error: {err}') from None
    skips = [s.strip() for s in args.skips.split(',')]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    stream = iter(loader)

    def batches():
        for _ in tqdm(range(args.num_batches), desc='calibrating', unit='batch'):
            try:
                data = next(stream)
            except StopIteration:  # a finite loader: start it over
                data = next(iter(loader))
            yield model.data_preprocessor(data, True)['inputs']

    try:
        names = calibrate_skip_norms(backbone, batches(), skips)
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    meta = dict(
        meta, skip_norm_calibration=dict(num_batches=args.num_batches, skips=skips,
                                         source=osp.abspath(args.checkpoint)))
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    tmp = temporary_path(args.out)  # a write that fails leaves an existing --out as it was
    try:
        save_checkpoint({'meta': meta, 'state_dict': model.state_dict()}, tmp)
        replace_atomically(tmp, args.out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    print(f'calibrated {len(names)} skip norms ({names[0]}, ...) on {args.num_batches} '
          f'batches through {skips}; wrote {args.out}')
    return 0


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    sys.exit(main())
