"""RTMDet's and YOLOX's PAFPN necks with skippable layers (the ADN neck option).

mmdet builds the PAFPN's ``CSPLayer``s (``top_down_blocks``, ``bottom_up_blocks``) with
``add_identity=False``: their blocks are plain convolutions, not residual refinements,
and cannot be skipped. The ADN necks make every block residual (``add_identity=True``:
each block adds its input to its output, which adds no parameter, so the keys stay the
upstream neck's) and split each ``CSPLayer`` of two or more blocks as the backbones do.
One flag per such layer, in the order top-down (from the coarsest level), then bottom-up.

Placed beside an ADN backbone in a detector, the neck's flags follow the backbone's
(``backbone.set_skip('TTF' + 'TTTT')``); on its own, ``neck.set_skip`` switches it.
"""
from typing import Dict, List, Tuple

import torch
from mmdet.models.necks import YOLOXPAFPN, CSPNeXtPAFPN
from mmdet.registry import MODELS

from ..layers.adaptive_depth import AdaptiveDepthMixin, adn_signature
from ..layers.csp import (check_csp_split, make_skippable, skippable_block_names, split_counts,
                          static_csp_state_dict)
from ..layers.skip import SkipLike, SkipTuple, parse_skip
from ..layers.skip_aware import collect_skip_norm_pairs


class CSPPAFPNADNMixin(AdaptiveDepthMixin):
    """The ADN part of :class:`CSPNeXtPAFPNADN` and :class:`YOLOXPAFPNADN`."""

    def _init_adn(self, skip: SkipLike, num_shared_blocks, skip_aware_norms: bool,
                  layer_blocks) -> None:
        layers = self._csp_layers()
        if layer_blocks is not None:
            self._truncate(layers, layer_blocks)
        for _, layer in layers:
            for block in layer.blocks:
                block.add_identity = True  # residual blocks (mid -> mid channels)
        self.num_shared_blocks = check_csp_split(num_shared_blocks, [m for _, m in layers],
                                                 type(self).__name__, unit='layer')
        self.skippable_layers = [
            name for (name, layer), k in zip(layers, self.num_shared_blocks)
            if k < len(layer.blocks)
        ]
        for (name, layer), k in zip(layers, self.num_shared_blocks):
            if k < len(layer.blocks):
                make_skippable(layer, k, skip_aware_norms)
        self.num_skippable_stages = len(self.skippable_layers)
        self.set_skip(skip)
        self._fill_skip_norms_on_load()

    def _truncate(self, layers, layer_blocks) -> None:
        counts = [len(m.blocks) for _, m in layers]
        ok = isinstance(layer_blocks, (list, tuple)) and len(layer_blocks) == len(layers) and \
            all(isinstance(k, int) and 1 <= k <= n for k, n in zip(layer_blocks, counts))
        if not ok:
            raise ValueError(
                f'{type(self).__name__}: layer_blocks={layer_blocks!r}: expected '
                f'{len(layers)} integers, one per CSP layer, each within 1..num_csp_blocks '
                f'({counts[0]})')
        for (_, layer), k in zip(layers, layer_blocks):
            del layer.blocks[k:]

    def _csp_layers(self) -> List[Tuple[str, torch.nn.Module]]:
        return [(f'top_down_blocks.{i}', m) for i, m in enumerate(self.top_down_blocks)] + \
            [(f'bottom_up_blocks.{i}', m) for i, m in enumerate(self.bottom_up_blocks)]

    def _skippable(self) -> List[Tuple[str, torch.nn.Module]]:
        return [(n, m) for n, m in self._csp_layers() if n in self.skippable_layers]

    def _apply_skip(self, skip: SkipTuple) -> None:
        for (_, layer), flag in zip(self._skippable(), skip):
            layer.blocks.set_skip_subpath(flag)

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        return collect_skip_norm_pairs(self)

    def skip_flag_buffers(self) -> List[str]:
        return [f'{name}.blocks.skip_flag' for name, _ in self._skippable()]

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable blocks, e.g. ``['top_down_blocks.0.blocks.1', ...]``."""
        return skippable_block_names(self._skippable())

    # -- static export ------------------------------------------------------------------
    def static_cfg(self, cfg: dict, skip: SkipLike = None) -> dict:
        """The config of this neck class with the blocks of sub-network ``skip`` and
        nothing left to skip (``layer_blocks``)."""
        skip = self._skip if skip is None else parse_skip(skip, self.num_skippable_stages)
        blocks = split_counts([m for _, m in self._csp_layers()], skip)
        static = {
            k: v
            for k, v in dict(cfg).items()
            if k not in ('skip', 'num_shared_blocks', 'skip_aware_norms', 'init_cfg')
        }
        static.update(layer_blocks=list(blocks), num_shared_blocks=list(blocks), init_cfg=None)
        return static

    def static_state_dict(self, skip: SkipLike = None) -> Dict[str, torch.Tensor]:
        skip = self._skip if skip is None else parse_skip(skip, self.num_skippable_stages)
        return static_csp_state_dict(self.state_dict(), self._skippable(), skip)

    def init_weights(self):
        super().init_weights()
        self._copy_skip_norms_unless_pretrained()


@MODELS.register_module()
class CSPNeXtPAFPNADN(CSPPAFPNADNMixin, CSPNeXtPAFPN):
    """RTMDet's PAFPN with residual, skippable ``CSPLayer``s.

    Takes every argument of mmdet's :class:`~mmdet.models.necks.CSPNeXtPAFPN`, in its order
    and with its defaults, then these keyword-only ones:

    Args:
        skip (str | Sequence[bool]): the depth to start with (one letter per skippable
            layer, ``'super'`` or ``'base'``); inside a detector with an ADN backbone the
            backbone's ``set_skip`` switches it.
        num_shared_blocks (Sequence[int], optional): shared blocks per CSP layer (top-down
            layers first); ``1..n`` for a layer of ``n >= 2`` blocks. Default
            ``min(n - 1, (n + 1) // 2)``.
        skip_aware_norms (bool): skip-aware norms in the shared blocks. Default True.
        layer_blocks (Sequence[int], optional): blocks per CSP layer, fewer than
            ``num_csp_blocks`` (the static form of one sub-network, written by
            ``tools/deployment/export_subnet.py``). Default: ``num_csp_blocks`` each.
    """

    def __init__(self, *args, skip: SkipLike = 'super', num_shared_blocks=None,
                 skip_aware_norms: bool = True, layer_blocks=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_adn(skip, num_shared_blocks, skip_aware_norms, layer_blocks)


@MODELS.register_module()
class YOLOXPAFPNADN(CSPPAFPNADNMixin, YOLOXPAFPN):
    """YOLOX's PAFPN with residual, skippable ``CSPLayer``s: every argument of mmdet's
    :class:`~mmdet.models.necks.YOLOXPAFPN`, then the keyword-only ones of
    :class:`CSPNeXtPAFPNADN`."""

    def __init__(self, *args, skip: SkipLike = 'super', num_shared_blocks=None,
                 skip_aware_norms: bool = True, layer_blocks=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_adn(skip, num_shared_blocks, skip_aware_norms, layer_blocks)


def link_adn_neck(parent: torch.nn.Module, name: str, value) -> None:
    """torch module-registration hook: a module given a ``backbone`` or ``neck`` child that
    makes it hold a CSP ADN backbone and an ADN neck side by side (a detector) links the
    neck to the backbone; replacing that module's linked neck by another neck unlinks it.
    Any other registration (e.g. a wrapper that keeps the backbone as its ``backbone``)
    leaves the link as it is."""
    if name not in ('backbone', 'neck'):
        return None
    backbone = value if name == 'backbone' else parent._modules.get('backbone')
    neck = value if name == 'neck' else parent._modules.get('neck')
    link = getattr(backbone, 'link_neck', None)
    if link is None:
        return None
    if isinstance(neck, CSPPAFPNADNMixin):
        link(neck)
    elif name == 'neck' and parent._modules.get('neck') is backbone.adn_neck is not None:
        link(None)  # the linked neck replaced (``parent._modules`` still holds the old one)
    return None


CSPNeXtPAFPNADN.__signature__ = adn_signature(CSPNeXtPAFPN, CSPNeXtPAFPNADN)
YOLOXPAFPNADN.__signature__ = adn_signature(YOLOXPAFPN, YOLOXPAFPNADN)

# a detector's ADN neck follows its ADN backbone from the moment both are its modules
torch.nn.modules.module.register_module_module_registration_hook(link_adn_neck)
