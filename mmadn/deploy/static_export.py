"""Export one sub-network of an ADN model as a plain static model.

The skipped blocks are removed and the skip-aware norms in use are moved into the ordinary
norm slots, so the result is a normal mmdet / mmpretrain model (its backbone a
``StageResNet`` with per-stage block counts, or mmdet's ``CSPNeXt`` / ``CSPDarknet`` with
``arch_ovewrite``) with a normal mmengine config and checkpoint. Everything else of the
model (heads, data preprocessor, pipelines, and the neck unless it is a skippable ADN
neck, which becomes its static form) is kept as it is.
"""
import copy
import os
import os.path as osp
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import HOOKS
from mmengine.runner import save_checkpoint

from ..analysis import profile_forward
from ..models import build_model, find_adn_backbone
from ..models.layers.skip import SkipLike, format_skip, parse_skip

#: loops that switch sub-networks -> the plain loop of a static model
SUBNET_LOOPS = {'SubnetValLoop': 'ValLoop', 'SubnetTestLoop': 'TestLoop'}
EXPORT_API = ('static_cfg', 'static_state_dict')


def exportable_backbone(model: nn.Module) -> nn.Module:
    """The model's ADN backbone, if it can be exported to a static model."""
    backbone = find_adn_backbone(model)
    missing = [m for m in EXPORT_API if not callable(getattr(backbone, m, None))]
    if missing:
        raise NotImplementedError(
            f'{type(backbone).__name__} cannot be exported to a static model yet: it does not '
            f'implement {" / ".join(missing)} (an exportable ADN backbone provides '
            'static_cfg(cfg, skip) and static_state_dict(skip), as ResNetADN does)')
    return backbone


def _strip_skip_prefix(name):
    """``'TTTT/coco/bbox_mAP'`` -> ``'coco/bbox_mAP'`` (a static model has one depth)."""
    if isinstance(name, str):
        return re.sub(r'^[TF]+/', '', name)
    if isinstance(name, (list, tuple)):
        return type(name)(_strip_skip_prefix(n) for n in name)
    return name


def _needs_adn_backbone(hook_cfg: dict) -> bool:
    """Whether the hook of ``hook_cfg`` works only on an ADN backbone (its class says so
    with ``needs_adn_backbone = True``); a static model trains without such hooks."""
    hook_type = hook_cfg.get('type')
    cls = HOOKS.get(hook_type) if isinstance(hook_type, str) else hook_type
    return bool(getattr(cls, 'needs_adn_backbone', False))


def _adn_parts(backbone: nn.Module, skip: SkipLike) -> List[Tuple[str, nn.Module, tuple]]:
    """``(model attribute, module, its skip)`` of each part exported: the backbone, and
    an ADN neck linked to it (whose flags are the last of ``skip``)."""
    skip = parse_skip(skip, backbone.num_skippable_stages)
    parts = [('backbone', backbone, skip)]
    neck = getattr(backbone, 'adn_neck', None)
    if neck is not None:
        parts.append(('neck', neck, skip[len(skip) - neck.num_skippable_stages:]))
    return parts


def static_config(cfg: Config, backbone: nn.Module, skip: SkipLike) -> Config:
    """``cfg`` with the static backbone (and neck, if the backbone carries an ADN neck's
    flags); ADN-only hooks and loops replaced by plain ones."""
    cfg = copy.deepcopy(cfg)
    for attr, part, part_skip in _adn_parts(backbone, skip):
        cfg.model[attr] = part.static_cfg(cfg.model[attr], part_skip)
    if cfg.get('custom_hooks'):
        cfg.custom_hooks = [h for h in cfg.custom_hooks if not _needs_adn_backbone(h)]
    for key in ('val_cfg', 'test_cfg'):
        loop = cfg.get(key)
        if loop and loop.get('type') in SUBNET_LOOPS:
            plain = dict(type=SUBNET_LOOPS[loop['type']])
            if 'fp16' in loop:
                plain['fp16'] = loop['fp16']
            cfg[key] = plain
    ckpt_hook = cfg.get('default_hooks', {}).get('checkpoint')
    if ckpt_hook and ckpt_hook.get('save_best'):
        ckpt_hook.save_best = _strip_skip_prefix(ckpt_hook.save_best)
    cfg.load_from = None
    cfg.resume = False
    return cfg


def export_static(cfg: Config, model: nn.Module,
                  skip: SkipLike) -> Tuple[Config, Dict[str, torch.Tensor]]:
    """The static config and state dict of sub-network ``skip`` of ``model``."""
    backbone = exportable_backbone(model)
    skip = parse_skip(skip, backbone.num_skippable_stages)
    state = model.state_dict()
    for _, part, part_skip in _adn_parts(backbone, skip):
        prefix = next(name for name, m in model.named_modules() if m is part)
        prefix = prefix + '.' if prefix else ''
        static_part = {prefix + k: v for k, v in part.static_state_dict(part_skip).items()}
        rest, state = state, {}
        for key, value in rest.items():
            if not key.startswith(prefix):
                state[key] = value
            elif static_part:  # at the part's place, in the static order
                state.update(static_part)
                static_part = {}
    return static_config(cfg, backbone, skip), state


def tensor_forward(model: nn.Module) -> Callable:
    """The tensor forward compared and exported: a classifier whole, a detector's
    backbone + neck (see :func:`mmadn.analysis.profile_forward`)."""
    return profile_forward(model)[0]


def flat_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat_outputs(o)]


@torch.no_grad()
def max_abs_diff(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor) -> float:
    """Largest absolute difference of the tensor outputs of two models on ``inputs``."""
    outs_a = flat_outputs(tensor_forward(model_a)(inputs))
    outs_b = flat_outputs(tensor_forward(model_b)(inputs))
    if [o.shape for o in outs_a] != [o.shape for o in outs_b]:
        raise RuntimeError(f'output shapes differ: {[tuple(o.shape) for o in outs_a]} vs '
                           f'{[tuple(o.shape) for o in outs_b]}')
    return max((a - b).abs().max().item() for a, b in zip(outs_a, outs_b))


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_subnet(config: str, checkpoint: str, skip: SkipLike, out_dir: str,
                  cfg_options: Optional[dict] = None) -> dict:
    """Write ``<config name>_<skip>.py`` and ``.pth`` into ``out_dir``: the plain static
    model of sub-network ``skip``. Returns the paths (``config``, ``checkpoint``), the
    ``skip`` string and the ``adaptive_model`` (loaded, in eval mode)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model, meta = build_model(cfg, checkpoint)
    backbone = exportable_backbone(model)
    skip_str = format_skip(parse_skip(skip, backbone.num_skippable_stages))
    static_cfg, state = export_static(cfg, model, skip_str)
    # the exported backbone is a plain one: the source's ADN layout goes with
    # the source (it is kept under adn_export)
    source_adn = meta.pop('adn_backbone', None)
    meta['adn_export'] = dict(skip=skip_str, source_config=osp.abspath(config),
                              source_adn_backbone=source_adn,
                              source_checkpoint=osp.abspath(checkpoint),
                              stage_blocks=list(backbone.static_stage_blocks(skip_str)))
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.join(out_dir, f'{osp.splitext(osp.basename(config))[0]}_{skip_str}')
    static_cfg.dump(stem + '.py')
    save_checkpoint({'meta': meta, 'state_dict': state}, stem + '.pth')
    return dict(config=stem + '.py', checkpoint=stem + '.pth', skip=skip_str, adaptive_model=model)
