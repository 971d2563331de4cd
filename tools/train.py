"""Train a detector (mmdet config) or a classifier (mmpretrain config), ADN or not.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Checkpoints already in the work dir are never overwritten by a run that starts from
iteration 0: without ``--resume`` such a run stops and says so; ``--resume`` continues from
the newest checkpoint that loads (``last_checkpoint`` is only a hint), or stops naming what
it found when none does. Checkpoints are written atomically
(:class:`mmadn.engine.hooks.AtomicCheckpointHook`).
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

import mmadn  # noqa: F401  (registers the modules, makes checkpoints loadable)
from mmadn.engine.hooks import CheckpointWriteError, TrainingDivergedError
from mmadn.engine.launch import build_runner, check_training_data, explain_data_error, load_config
from mmadn.engine.runner.resume import find_resume_checkpoint, list_checkpoints
from mmadn.models import CHECKPOINT_ERRORS, CheckpointMismatchError, load_checkpoint_file
from mmadn.utils.fileio import DirectoryInUseError, DirectoryLock, write_bytes_atomically


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr with the total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a value, from the latest checkpoint '
        'of the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.skip=TTFF')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _fail(msg: str):
    raise SystemExit(f'error: {msg}')


def checkpoint_dirs(cfg) -> list:
    """Where CheckpointHook writes: the work dir, or ``out_dir/<work dir name>``."""
    out_dir = (cfg.get('default_hooks', {}).get('checkpoint') or {}).get('out_dir')
    dirs = [cfg.work_dir]
    if out_dir:
        dirs.append(osp.join(out_dir, osp.basename(osp.normpath(cfg.work_dir))))
    return dirs


def choose_start(cfg, resume) -> None:
    """Set ``cfg.resume`` / ``cfg.load_from`` so that no existing checkpoint is lost."""
    dirs = checkpoint_dirs(cfg)
    where = ' / '.join(dirs)
    if resume == 'auto':
        path, found, refused = find_resume_checkpoint(dirs)
        if path is None and found:
            listed = '; '.join(f'{osp.basename(p)}: {refused.get(p, "?")}' for p in found[:4])
            _fail(f'--resume: none of the {len(found)} checkpoint(s) in {where} loads ('
                  f'{listed}); nothing was overwritten. Remove or replace the broken files, '
                  'or pass --resume FILE')
        if path is None:
            print(
                f'WARNING: --resume found no checkpoint in {where} (no last_checkpoint, '
                'no iter_*.pth / epoch_*.pth): training starts from iteration 0', file=sys.stderr,
                flush=True)
            cfg.resume, cfg.load_from = False, None
            return
        skipped = [p for p in found if p in refused]
        if skipped:
            print(
                f'WARNING: --resume passed over {len(skipped)} newer checkpoint(s) that do '
                f'not load: ' + '; '.join(f'{osp.basename(p)}: {refused[p]}' for p in skipped[:3]),
                file=sys.stderr, flush=True)
        print(f'--resume: resuming from {path}', flush=True)
        cfg.resume, cfg.load_from = True, path
    elif resume is not None:
        load_checkpoint_file(resume, training=True)  # a broken file stops here, clearly
        cfg.resume, cfg.load_from = True, resume
    elif not cfg.get('resume'):
        existing = list_checkpoints(dirs)
        if existing:
            names = ', '.join(osp.basename(p) for p in existing[:4])
            more = ', ...' if len(existing) > 4 else ''
            _fail(f'{where} already holds {len(existing)} checkpoint(s) ({names}{more}): a '
                  'run from iteration 0 would overwrite them. Pass --resume to continue from '
                  'the newest, or choose another --work-dir (or remove them)')


def main():
    args = parse_args()
    if args.amp and not torch.cuda.is_available():
        _fail("--amp: mmengine's AMP (AmpOptimWrapper) needs a GPU, and no CUDA device is "
              'available here; train without --amp on this machine')
    if args.resume not in (None, 'auto') and not osp.isfile(args.resume):
        _fail(f'--resume {args.resume}: no such file (give a checkpoint file, or --resume '
              'alone to continue from the newest checkpoint of the work dir)')
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
        if int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0))) == 0:
            DirectoryLock(cfg.work_dir).acquire()  # held until this process ends
        choose_start(cfg, args.resume)
        check_training_data(cfg)
    except (FileNotFoundError, ValueError, DirectoryInUseError, *CHECKPOINT_ERRORS) as err:
        _fail(str(err))
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    # the Runner writes WORK_DIR/<config name> before it loads a checkpoint: a run refused
    # at that point must leave the dump of the run the user continues as it was
    dump = osp.join(cfg.work_dir, osp.basename(args.config))
    previous = open(dump, 'rb').read() if osp.isfile(dump) else None
    try:
        build_runner(cfg).train()
    except (CheckpointMismatchError, *CHECKPOINT_ERRORS) as err:
        if previous is not None:
            write_bytes_atomically(dump, previous)
        _fail(str(err))
    except (TrainingDivergedError, CheckpointWriteError, DirectoryInUseError) as err:
        _fail(str(err))
    except (AssertionError, ValueError) as err:  # data that cannot be read: name the file
        message = explain_data_error(cfg, err)
        if message is None:
            raise
        _fail(message)


if __name__ == '__main__':
    main()
