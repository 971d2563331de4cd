"""ADN checkpoints, seen from the model: the backbone's layout recorded in a checkpoint
(``meta['adn_backbone']``), why a checkpoint does not fit a model (a bare backbone, another
model, another ADN split, an ADN checkpoint for a plain backbone) and what would, and
strict loading that says so."""
import os.path as osp
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.runner import load_state_dict
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.checkpoint_safety import CorruptCheckpointError, UnsafeCheckpointError
from .layers.adaptive_depth import CheckpointMismatchError, find_adn_backbone

#: Errors that mean "this file cannot be used as given"; tools turn them into one line.
CHECKPOINT_ERRORS = (CorruptCheckpointError, UnsafeCheckpointError)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def _adn_backbone(model: nn.Module):
    """The ADN backbone and its key prefix in the model's state dict (None, '' without)."""
    backbone = find_adn_backbone(model, required=False)
    if backbone is None:
        return None, ''
    return backbone, '' if backbone is _unwrap(model) else 'backbone.'


def first_nonfinite(state: dict) -> Optional[str]:
    """The name of the first floating-point tensor of ``state`` holding a NaN or an
    infinity (``'backbone.conv1.weight (nan)'``), or None."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and \
                not bool(torch.isfinite(value).all()):
            kind = 'nan' if bool(torch.isnan(value).any()) else 'inf'
            return f'{name} ({kind})'
    return None


def load_checkpoint_file(path: str, training: bool = False) -> dict:
    """Load ``path`` (on the CPU) through mmengine's checked loaders.

    Raises :class:`CorruptCheckpointError` / :class:`UnsafeCheckpointError` for a file that
    does not load, and :class:`CheckpointMismatchError` for one that is no checkpoint
    dict, or, with ``training=True``, no training checkpoint (``meta.iter`` and
    ``meta.epoch``, which ``--resume`` needs).
    """
    if not osp.isfile(osp.expanduser(path)):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(
            f'{path} holds a {type(ckpt).__name__}, not a checkpoint (a dict of weights, '
            'or of state_dict and meta)')
    if training:
        bad = first_nonfinite(_state_dict_of(ckpt))
        if bad is not None:
            raise CheckpointMismatchError(
                f'{path} holds weights that are not finite ({bad}): it was written after '
                'training diverged; continue from an earlier checkpoint')
        meta = ckpt.get('meta')
        if not isinstance(meta, dict) or 'iter' not in meta or 'epoch' not in meta:
            raise CheckpointMismatchError(
                f'{path} is no training checkpoint (it has no meta.iter / meta.epoch; '
                f'{_describe_keys(ckpt)}): --resume continues a run from an iter_*.pth / '
                'epoch_*.pth that training wrote; to start a new run from these weights use '
                f'--cfg-options load_from={path}')
    return ckpt


def adn_backbone_meta(model: nn.Module) -> Optional[dict]:
    """``dict(type, num_skippable_stages, skippable_blocks, skip_aware_norms
    [, num_shared_blocks])`` of the model's ADN backbone, or None without one."""
    backbone, _ = _adn_backbone(model)
    if backbone is None:
        return None
    meta = dict(type=type(backbone).__name__,
                num_skippable_stages=int(backbone.num_skippable_stages),
                skippable_blocks=list(backbone.skippable_blocks()),
                skip_aware_norms=bool(backbone.skip_norm_pairs()))
    if getattr(backbone, 'num_shared_blocks', None) is not None:
        meta['num_shared_blocks'] = [int(k) for k in backbone.num_shared_blocks]
    return meta


def _describe_adn(meta: dict) -> str:
    if 'num_shared_blocks' in meta:
        split = f"num_shared_blocks={tuple(meta['num_shared_blocks'])}"
    else:
        split = f"skippable blocks {meta.get('skippable_blocks')}"
    norms = '' if meta.get('skip_aware_norms', True) else ', skip_aware_norms=False'
    return f"{meta.get('type')}({split}{norms})"


def _compare_adn_meta(recorded: dict, current: dict, filename: str) -> None:
    fields = ('type', 'num_shared_blocks', 'skip_aware_norms') \
        if 'num_shared_blocks' in recorded and 'num_shared_blocks' in current \
        else ('type', 'skippable_blocks', 'skip_aware_norms')
    differ = [f for f in fields if recorded.get(f, current.get(f)) != current.get(f)]
    if not differ:
        return
    if differ == ['type']:
        fix = f"use a config whose backbone is type='{recorded.get('type')}'"
    else:
        settable = [f for f in differ if f != 'skippable_blocks' and f in recorded]
        values = [
            tuple(recorded[f]) if isinstance(recorded[f], list) else recorded[f] for f in settable
        ]
        fix = ('set ' + ', '.join(f'model.backbone.{f}={v!r}' for f, v in zip(settable, values))
               + ' to match the checkpoint') if settable else \
            'use the config the checkpoint was trained with'
    raise CheckpointMismatchError(
        f'checkpoint {filename} was trained with {_describe_adn(recorded)} (its '
        f"meta['adn_backbone']), but this config builds {_describe_adn(current)}: {fix}")


def _state_dict_of(checkpoint: dict) -> OrderedDict:
    """The weights of a checkpoint, without a DDP ``module.`` prefix, keeping the state
    dict's ``_metadata`` (module versions that some ``_load_from_state_dict`` read)."""
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict):
        return OrderedDict()
    out = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())
    out._metadata = getattr(state, '_metadata', OrderedDict())
    return out


def _describe_keys(checkpoint: dict) -> str:
    state = _state_dict_of(checkpoint)
    sample = ', '.join(repr(k) for k in list(state)[:3])
    return f'{len(state)} weights such as {sample}' if state else 'no weights'


def _experiment(meta: dict) -> str:
    name = meta.get('experiment_name') if isinstance(meta, dict) else None
    return f" (run '{name}')" if name else ''


def _first(items, n: int = 3) -> str:
    items = sorted(items)
    more = f' ... ({len(items)} in all)' if len(items) > n else ''
    return ', '.join(items[:n]) + more


def check_checkpoint_fits(model: nn.Module, checkpoint, filename: str, strict: bool = True) -> None:
    """Raise :class:`CheckpointMismatchError` if ``checkpoint`` does not fit ``model``.

    Always checked: the ADN backbone recorded in ``meta['adn_backbone']`` against the
    model's (type and split), and an ADN checkpoint given to a model without an ADN
    backbone. With ``strict``, also every key and shape (``*_skip`` norms missing from a
    checkpoint that has none at all are fine: they are filled on load); the message says
    what the file is (a bare backbone state dict, another model whose backbone fits, the
    authors' ADN release) and what would load it.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'{filename} holds a {type(checkpoint).__name__}, not a checkpoint')
    model = _unwrap(model)
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    state = _state_dict_of(checkpoint)
    backbone, prefix = _adn_backbone(model)
    recorded = meta.get('adn_backbone')
    if backbone is not None and isinstance(recorded, dict):
        _compare_adn_meta(recorded, adn_backbone_meta(model), filename)
    plain = getattr(model, 'backbone', None)
    if backbone is None and plain is not None:
        adn_keys = [k for k in state if k.startswith('backbone.') and '_skip.' in k]
        if isinstance(recorded, dict) or adn_keys:
            trained = _describe_adn(recorded) if isinstance(recorded, dict) else \
                f'an ADN backbone (skip-aware norms such as {adn_keys[0]!r})'
            raise CheckpointMismatchError(
                f'checkpoint {filename} was trained with {trained}{_experiment(meta)}, but '
                f'this config builds the plain backbone {type(plain).__name__}: use the ADN '
                'config it was trained with (the config text is in its meta.cfg)')
    if not strict:
        return
    expected = {k: v for k, v in model.state_dict().items()}
    has_skip = any('_skip.' in k for k in state)
    fillable = set() if has_skip else {k for k in expected if '_skip.' in k}
    missing = {
        k
        for k in set(expected) - set(state) - fillable if not k.endswith('num_batches_tracked')
    }  # as mmengine's strict load
    unexpected = set(state) - set(expected)
    shapes = [
        k for k in set(state) & set(expected)
        if hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    name = type(model).__name__
    inner = {k[len('backbone.'):] for k in expected if k.startswith('backbone.')}
    bare = [k for k in state if not k.startswith('backbone.')]
    if inner and len(set(bare) & inner) >= 0.5 * max(len(state), 1):
        if any('_skip.' in k for k in bare) and 'fc.weight' in state:
            raise CheckpointMismatchError(
                f'{filename} is a bare ResNet-ADN state dict in the authors\' layout (keys '
                f"such as 'layer1.0.bn1_skip.weight' and 'fc.weight'), not a {name} "
                'checkpoint: convert it with tools/model_converters/adn_official_to_mmadn.py '
                '(it writes a classifier checkpoint and a backbone-only one)')
        raise CheckpointMismatchError(
            f"{filename} is a bare backbone state dict (keys such as {bare[0]!r}, no "
            f"'backbone.' prefix), not a checkpoint of this {name}: start training from it "
            f"with model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{filename}')")
    state_inner = {k[len('backbone.'):] for k in state if k.startswith('backbone.')}
    inner_fill = {k[len('backbone.'):] for k in fillable if k.startswith('backbone.')}
    other = [k for k in missing | unexpected | set(shapes) if not k.startswith('backbone.')]
    if inner and inner - inner_fill <= state_inner and other and not [
            k for k in shapes if k.startswith('backbone.')
    ]:
        raise CheckpointMismatchError(
            f'{filename} holds another model{_experiment(meta)} whose backbone fits this '
            f'config but whose other parts do not ({_first(other)}): start training from '
            "its backbone with model.backbone.init_cfg=dict(type='Pretrained', "
            f"checkpoint='{filename}', prefix='backbone.')")
    parts = []
    if missing:
        parts.append(f'missing in the checkpoint: {_first(missing)}')
    if unexpected:
        parts.append(f'not in the model: {_first(unexpected)}')
    if shapes:
        k = sorted(shapes)[0]
        parts.append(f'other shapes: {k} {tuple(state[k].shape)} in the checkpoint, '
                     f'{tuple(expected[k].shape)} in the model ({len(shapes)} in all)')
    raise CheckpointMismatchError(
        f'checkpoint {filename}{_experiment(meta)} does not fit the model of this config '
        f'({name}; ' + '; '.join(parts) + '): use the config it was trained with')


def load_checkpoint_dict_strictly(model: nn.Module, checkpoint: dict, filename: str) -> None:
    """Copy ``checkpoint`` (loaded from ``filename``) into ``model``, strictly.

    The recorded ADN layout is compared first; the backbones' own load checks (depth,
    split of the skip-aware norms) speak next; any other mismatch is described by
    :func:`check_checkpoint_fits`. Raises :class:`CheckpointMismatchError`.
    """
    check_checkpoint_fits(model, checkpoint, filename, strict=False)
    name = type(_unwrap(model)).__name__
    try:
        load_state_dict(_unwrap(model), _state_dict_of(checkpoint), strict=True, logger='silent')
    except CheckpointMismatchError as err:  # a backbone's own check (depth, split)
        raise CheckpointMismatchError(
            f'checkpoint {filename} does not fit the model of this config ({name}): '
            f'{err}') from None
    except RuntimeError as err:
        check_checkpoint_fits(model, checkpoint, filename, strict=True)  # says what it is
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise CheckpointMismatchError(
            f'checkpoint {filename} does not fit the model of this config ({name}): ' +
            ' '.join(ln[:300] for ln in lines[:4])) from None


def load_strictly(model: nn.Module, filename: str) -> dict:
    """Load the file ``filename`` into ``model`` strictly (see
    :func:`load_checkpoint_dict_strictly`); returns the checkpoint. A file that does not
    load raises :class:`CorruptCheckpointError` / :class:`UnsafeCheckpointError`."""
    checkpoint = load_checkpoint_file(filename)
    load_checkpoint_dict_strictly(model, checkpoint, filename)
    return checkpoint
