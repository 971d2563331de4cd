"""Shared plumbing of ``tools/train.py`` and ``tools/test.py`` (detection and
classification configs alike)."""
import os
import os.path as osp
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, RUNNERS, DefaultScope
from mmengine.runner import Runner, load_checkpoint


def load_config(config: str, cfg_options=None, launcher: str = 'none',
                work_dir=None) -> Config:
    """Read a config, apply ``--cfg-options`` and the launcher, choose the work dir."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config!r} does not exist')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    setup_cpu_distributed(cfg)
    return cfg


def build_model(cfg: Config, checkpoint: Optional[str] = None,
                device: str = 'cpu') -> Tuple[nn.Module, dict]:
    """Build ``cfg.model`` in the config's default scope and load ``checkpoint``.

    Returns the model (in eval mode, on ``device``) and the checkpoint's ``meta``.
    """
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    meta = {}
    if checkpoint is not None:
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                               logger='silent')
        meta = dict(ckpt.get('meta') or {})
    return model.to(device).eval(), meta


def setup_cpu_distributed(cfg: Config) -> None:
    """Let ``--launcher pytorch`` (and slurm) run on machines without CUDA.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` in ``init_dist`` and wraps the model in
    DDP with ``device_ids=[local_rank]``; both fail on CPU. Here the gloo process group is
    started before the Runner is built (the Runner then skips ``init_dist``) and DDP gets
    ``device_ids=None``.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        if 'SLURM_PROCID' in os.environ and 'RANK' not in os.environ:
            os.environ['RANK'] = os.environ['SLURM_PROCID']
            os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
            os.environ.setdefault('MASTER_PORT', '29500')
            os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout', 1800)
        dist.init_process_group(backend='gloo', timeout=timedelta(seconds=timeout))
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper = dict(wrapper)
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config) -> Runner:
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
