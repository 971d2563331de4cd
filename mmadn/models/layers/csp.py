"""Skippable sub-paths inside mmdet's ``CSPLayer`` (RTMDet's CSPNeXt and PAFPN, YOLOX's
CSPDarknet and PAFPN).

A ``CSPLayer`` runs its ``blocks`` (an ``nn.Sequential`` of ``CSPNeXtBlock`` or
``DarknetBottleneck``) on the main branch between ``main_conv`` and the concatenation with
``short_conv``'s branch. When the blocks are residual (``add_identity``) and there are at
least two of them, the first ``num_shared_blocks`` are shared and the rest can be skipped;
every ``ConvModule`` of a shared block then gets a skip-aware norm (``bn`` + ``bn_skip``).
The layer is changed in place (its ``blocks`` container changes class, its modules stay),
so the upstream construction and its checkpoint keys are kept.

The flag is kept twice, as in ResNet-ADN's stages: ``skip_subpath`` (eager mode runs a
Python ``if`` on it) and the non-persistent 0-dim bool buffer ``skip_flag``, on which the
blocks run as a ``torch.cond`` between their two sub-paths in eval mode while
``torch.compile`` or ``torch.export`` traces (one graph or one ONNX file for every depth).
"""
import itertools
from typing import List, Optional, Sequence, Tuple

from mmcv.cnn import ConvModule
from torch import nn

from .skip import default_num_shared_blocks
from .skip_aware import SKIP_SUFFIX, ADNConvModule, make_skip_aware
from .skippable import SkippableBlocksMixin


class SkippableCSPBlocks(SkippableBlocksMixin, nn.Sequential):
    """The ``blocks`` of a ``CSPLayer``; from ``num_shared_blocks`` on they are skipped
    while ``skip_subpath`` is True, and the shared blocks' skip-aware norms are in use."""


def is_residual_csp(layer: nn.Module) -> bool:
    """Whether a ``CSPLayer``'s blocks add their input to their output."""
    return all(getattr(b, 'add_identity', False) for b in layer.blocks)


def default_csp_split(layers: Sequence[nn.Module]) -> Tuple[int, ...]:
    """Shared blocks per ``CSPLayer``: the ResNet-ADN rule for a layer of two or more
    residual blocks, all its blocks (nothing skippable) otherwise."""
    return tuple(
        default_num_shared_blocks(len(layer.blocks))
        if is_residual_csp(layer) and len(layer.blocks) >= 2 else len(layer.blocks)
        for layer in layers)


def check_csp_split(value, layers: Sequence[nn.Module], owner: str,
                    unit: str = 'stage') -> Tuple[int, ...]:
    """``value`` (one integer per ``CSPLayer``, or None for the default) as a tuple.

    A layer of ``n >= 2`` residual blocks takes ``1..n`` (``n``: it does not skip); any
    other layer takes only its ``n``. Raises ValueError naming the value and the ranges.
    """
    default = default_csp_split(layers)
    if value is None:
        return default
    counts = [len(layer.blocks) for layer in layers]
    open_ = [is_residual_csp(layer) and n >= 2 for layer, n in zip(layers, counts)]
    ok = isinstance(value, (list, tuple)) and len(value) == len(layers) and all(
        isinstance(k, int) and not isinstance(k, bool) and (1 <= k <= n if o else k == n)
        for k, n, o in zip(value, counts, open_))
    if ok:
        return tuple(value)
    ranges = ', '.join(f'1..{n}' if o else str(n) for n, o in zip(counts, open_))
    raise ValueError(
        f'{owner}: num_shared_blocks={value!r}: expected {len(layers)} integers, one per '
        f'{unit}, within ({ranges}) (blocks per {unit} {tuple(counts)}; a {unit} that keeps '
        f'all its blocks does not skip; one without 2 residual blocks keeps all); the '
        f'default is {default}')


def make_skippable(layer: nn.Module, num_shared: int, skip_aware_norms: bool = True) -> None:
    """Split ``layer.blocks`` (a ``CSPLayer``'s) after ``num_shared`` blocks, in place;
    with ``skip_aware_norms`` the shared blocks' ConvModules get ``bn_skip`` norms."""
    blocks = layer.blocks
    blocks.__class__ = SkippableCSPBlocks
    if skip_aware_norms:
        for block in itertools.islice(blocks._modules.values(), num_shared):
            for m in block.modules():
                if isinstance(m, ConvModule) and m.with_norm:
                    make_skip_aware(m, ADNConvModule).add_skip_norms()
    blocks.init_skippable(num_shared)


def skippable_block_names(layers: Sequence[Tuple[str, nn.Module]]) -> List[str]:
    """``'<layer name>.blocks.<i>'`` of every skippable block of the named ``CSPLayer``s."""
    return [
        f'{name}.blocks.{i}' for name, layer in layers
        if isinstance(layer.blocks, SkippableCSPBlocks)
        for i in range(layer.blocks.num_shared_blocks, len(layer.blocks))
    ]


def static_csp_state_dict(state: dict, layers: Sequence[Tuple[str, nn.Module]],
                          skip: Sequence[bool]) -> dict:
    """``state`` (a state dict holding the named skippable ``CSPLayer``s) for the static
    model of one sub-network: in a skipping layer the skipped blocks are dropped and each
    ``*_skip`` norm takes its partner's keys; elsewhere the ``*_skip`` norms are dropped."""
    out = dict(state)
    for (name, layer), flag in zip(layers, skip):
        blocks = layer.blocks
        prefix = f'{name}.blocks.'
        for key in [k for k in out if k.startswith(prefix)]:
            idx_str, _, rest = key[len(prefix):].partition('.')
            module, _, field = rest.rpartition('.')
            is_skip_norm = module.endswith(SKIP_SUFFIX)
            if flag and int(idx_str) >= blocks.num_shared_blocks:
                del out[key]
            elif is_skip_norm:
                value = out.pop(key)
                if flag:
                    out[f'{prefix}{idx_str}.{module[:-len(SKIP_SUFFIX)]}.{field}'] = value
    return out


def split_counts(layers: Sequence[nn.Module],
                 skip: Optional[Sequence[bool]] = None) -> Tuple[int, ...]:
    """Blocks per ``CSPLayer`` that run in sub-network ``skip`` (one flag per skippable
    layer, in order; None: all of them)."""
    flags = iter(skip or ())
    out = []
    for layer in layers:
        blocks = layer.blocks
        skippable = isinstance(blocks, SkippableCSPBlocks)
        out.append(blocks.num_shared_blocks
                   if skippable and skip is not None and next(flags) else len(blocks))
    return tuple(out)
