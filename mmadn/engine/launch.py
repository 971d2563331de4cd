"""Shared plumbing of the tools (detection and classification configs alike): reading a
config, checking it before anything is built, starting a run on CPU-only machines, and the
command-line argument types."""
import argparse
import json
import os
import os.path as osp
import re
from datetime import timedelta
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import RUNNERS, DefaultScope
from mmengine.runner import Runner

from ..models.layers.skip import check_skip_form, check_skips_form, format_skip, skips_as_tuples
from ..utils.fileio import read_json


def load_config(config: str, cfg_options=None, launcher: str = 'none', work_dir=None) -> Config:
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
    check_config(cfg)
    use_safe_checkpoints(cfg)
    setup_cpu_distributed(cfg)
    return cfg


def use_safe_checkpoints(cfg: Config) -> None:
    """A plain ``CheckpointHook`` in ``default_hooks`` becomes
    :class:`~mmadn.engine.hooks.AtomicCheckpointHook` (same arguments: checkpoints written
    atomically, never of non-finite weights, old ones pruned only after the new one is in
    place), and :class:`~mmadn.engine.hooks.FiniteLossHook` is added to ``custom_hooks``
    (a run whose losses stop being finite stops there)."""
    hook = cfg.get('default_hooks', {}).get('checkpoint')
    if isinstance(hook, dict) and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook['type'] = 'AtomicCheckpointHook'
    if not _hook_cfgs(cfg, 'FiniteLossHook'):
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(type='FiniteLossHook')]


def _hook_cfgs(cfg: Config, type_name: str) -> list:
    return [
        h for h in cfg.get('custom_hooks') or []
        if isinstance(h, dict) and str(h.get('type', '')).split('.')[-1] == type_name
    ]


def check_config(cfg: Config) -> None:
    """Checks of a config done before anything is built; each raises ValueError naming the
    option, the value and the fix.

    * the sub-path specialization hook's arguments (built once here: its ``__init__``
      checks them, e.g. ``alpha``, ``super_skip`` / ``base_skip``);
    * ``val_cfg.skips`` of a ``SubnetValLoop`` and a ``save_best`` key it will produce;
    * under a distributed launcher, trained sub-networks that leave parameters without
      gradients (DDP stops at the second iteration unless ``find_unused_parameters``).
    """
    from mmengine.registry import HOOKS
    hooks = _hook_cfgs(cfg, 'SubPathSpecializationHook')
    for hook in hooks:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            HOOKS.build(dict(hook))
    _check_save_best(cfg)
    if cfg.get('launcher', 'none') != 'none':
        for hook in hooks:
            _check_unused_parameters(cfg, hook)


def _check_save_best(cfg: Config) -> None:
    val_cfg = cfg.get('val_cfg') or {}
    if str(val_cfg.get('type', '')).split('.')[-1] != 'SubnetValLoop':
        return
    val_skips = val_cfg.get('skips', ('super', 'base'))
    forms = check_skips_form(val_skips, 'val_cfg.skips')
    save_best = (cfg.get('default_hooks', {}).get('checkpoint') or {}).get('save_best')
    keys = [save_best] if isinstance(save_best, str) else list(save_best or [])
    keys = [k for k in keys if k != 'auto']
    if not keys or forms == 'all':
        return
    for key in keys:
        prefix, _, metric = key.partition('/')
        try:
            wanted = check_skip_form(prefix) if metric else None
        except ValueError:
            wanted = None
        if not isinstance(wanted, tuple):
            raise ValueError(
                f'default_hooks.checkpoint.save_best={key!r}: SubnetValLoop reports every '
                "metric with its sub-network's skip as prefix (e.g. 'TTTT/coco/bbox_mAP' "
                "or 'TTTT/accuracy/top1'); prefix the metric with one of val_cfg.skips="
                f'{val_skips!r}')
        try:
            produced = {format_skip(t) for t in skips_as_tuples(wanted, *forms)[1:]}
        except ValueError:  # another number of stages than val_cfg.skips: never produced
            produced = {f if isinstance(f, str) else format_skip(f) for f in forms}
        if format_skip(wanted) not in produced:
            raise ValueError(
                f'default_hooks.checkpoint.save_best={key!r}: val_cfg.skips={val_skips!r} '
                f'evaluates {sorted(produced)}, never {format_skip(wanted)}; use e.g. '
                f"'{sorted(produced)[-1]}/{metric}' or add {format_skip(wanted)!r} to "
                'val_cfg.skips')


def _check_unused_parameters(cfg: Config, hook: dict) -> None:
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('find_unused_parameters'):
        return
    sup_form = check_skip_form(hook.get('super_skip', 'super'))
    base_form = check_skip_form(hook.get('base_skip', 'base'))
    sup, base = skips_as_tuples(sup_form, base_form)
    skip_norms = (cfg.model.get('backbone') or {}).get('skip_aware_norms', True)
    words = isinstance(sup_form, str) and isinstance(base_form, str)
    unused = []
    for i, (s, b) in enumerate(zip(sup, base)):
        stage = 'every stage' if words else f'stage {i + 1}'
        if s:
            unused.append(f'the skippable blocks of {stage} (both sub-networks skip it)')
        if not b and skip_norms:
            unused.append(f'the skip-aware norms of {stage} (neither sub-network skips it)')
    if unused:
        raise ValueError(
            f"SubPathSpecializationHook(super_skip={hook.get('super_skip', 'super')!r}, "
            f"base_skip={hook.get('base_skip', 'base')!r}) under DDP: "
            f'{"; ".join(unused)} get no gradient, and DDP stops at the second iteration '
            "('Expected to have finished reduction in the prior iteration'). "
            'Set model_wrapper_cfg=dict(type=\'MMDistributedDataParallel\', '
            'find_unused_parameters=True) (--cfg-options '
            'model_wrapper_cfg.find_unused_parameters=True), or train super_skip=\'super\' '
            'with base_skip=\'base\'')


#: the first bytes of the image formats OpenCV reads
IMAGE_MAGIC = (b'\x89PNG', b'\xff\xd8\xff', b'BM', b'II*\x00', b'MM\x00*', b'RIFF', b'GIF8')


def annotation_files(cfg: Config, splits=('train', 'val', 'test')) -> List[Tuple[str, str]]:
    """``(path, image folder)`` of the COCO-style (``.json``) annotation files of the
    config's dataloaders (through dataset wrappers)."""
    found = []

    def visit(dataset):
        if not isinstance(dataset, dict):
            return
        for inner in [dataset.get('dataset')] + list(dataset.get('datasets') or []):
            visit(inner)
        ann = dataset.get('ann_file')
        if isinstance(ann, str) and ann.endswith('.json'):
            root = dataset.get('data_root') or ''
            prefix = (dataset.get('data_prefix') or {}).get('img', '')
            found.append((osp.join(root, ann), osp.join(root, prefix)))

    for split in splits:
        visit((cfg.get(f'{split}_dataloader') or {}).get('dataset'))
    return list(dict.fromkeys(found))


def check_training_data(cfg: Config, max_images: int = 20000) -> int:
    """Before training starts: the training annotation files must be JSON, and the images
    they list that exist must start as an image file does (a file with another content
    fails only when its batch comes, possibly hours later). Missing files are left to the
    dataset (a generated one writes them). Files of more than ``max_images`` images are
    not checked image by image. Raises ValueError naming the files; returns how many
    images were checked."""
    checked = 0
    for ann, folder in annotation_files(cfg, ('train', )):
        if not osp.isfile(ann):
            continue
        coco = read_json(ann, 'a COCO-format annotation file')
        images = coco.get('images', []) if isinstance(coco, dict) else []
        if len(images) > max_images:
            continue
        bad = []
        for image in images:
            path = osp.join(folder, str(image.get('file_name', '')))
            if osp.isfile(path):
                with open(path, 'rb') as f:
                    if not f.read(8).startswith(IMAGE_MAGIC):
                        bad.append(path)
                checked += 1
        if bad:
            raise ValueError(f'{len(bad)} training image(s) of {ann} are no image files '
                             f'({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}): '
                             'replace them or remove them from the annotations')
    return checked


def explain_data_error(cfg: Config, err: BaseException) -> Optional[str]:
    """One line for an error met while reading the data: an image that does not decode
    (named by mmcv's ``failed to load image``) or an annotation file that is not JSON
    (found by reading the config's annotation files); None for any other error."""
    found = re.search(r'failed to load image: (\S+)', str(err))
    if found:
        return (f'the image {found.group(1)} could not be read (not a decodable image): '
                'replace it or remove it from the annotations')
    if isinstance(err, json.JSONDecodeError):
        for ann, _ in annotation_files(cfg):
            if osp.isfile(ann):
                try:
                    read_json(ann, 'a COCO-format annotation file')
                except ValueError as bad:
                    return str(bad)
    return None


def check_output_path(path: str, option: str, suffixes: Sequence[str] = (),
                      inputs: Sequence[str] = (), folder: bool = False) -> str:
    """Check, before anything is built, that the tool can write ``path`` (its ``option``):
    the right kind (a file with one of ``suffixes``, or a ``folder``), in a place that
    exists or can be created and is writable, and none of the ``inputs`` (a tool never
    writes over what it reads). Raises ValueError naming the option, the path and why."""
    where = f'{option} {path}'
    if suffixes and not folder and not path.lower().endswith(tuple(suffixes)):
        raise ValueError(f'{where}: expected a file name ending with {" or ".join(suffixes)}')
    if not folder and osp.isdir(path):
        raise ValueError(f'{where} is a folder: expected a file name')
    if folder and osp.exists(path) and not osp.isdir(path):
        raise ValueError(f'{where} is a file: expected a folder')
    for source in inputs:
        if source and osp.exists(source) and osp.exists(path) and osp.samefile(path, source):
            raise ValueError(f'{where} is the input {source}: writing it would destroy it; '
                             'choose another output')
    existing = osp.abspath(path if folder else osp.dirname(osp.abspath(path)))
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing) or not os.access(existing, os.W_OK):
        raise ValueError(f'{where}: {existing} is not a writable folder')
    return path


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(text).strip() != str(value):
        raise argparse.ArgumentTypeError(f'{text!r}: expected an integer >= 1')
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r}: expected an integer >= 0')
    return value


def skips_argument(text: str) -> str:
    """argparse ``type`` for ``--skip(s)``: checked before the model is built (the length
    is checked once the model is known)."""
    try:
        check_skips_form(text, 'skips')
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


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
