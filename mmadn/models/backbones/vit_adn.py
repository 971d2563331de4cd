"""Vision Transformer with adaptive depth (ADN): a small change on top of mmpretrain's
VisionTransformer.

The encoder layers form four groups (stages) of equal size, 3 layers each for ViT-B; the
last layer of each group (2, 5, 8, 11) is its specialized sub-path, skipped while the
group's flag is True. The other layers own skip-aware LayerNorms (``ln1_skip``,
``ln2_skip``). The output of each group (after its skippable layer, or instead of it) is
the stage feature that the training hook distils, exposed through a parameter-free
:class:`TokenFeatureMap`.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.backbones.vision_transformer import (TransformerEncoderLayer,
                                                            VisionTransformer)
from mmpretrain.registry import MODELS
from torch import nn

from ..layers.adaptive_depth import AdaptiveDepthMixin, adn_signature
from ..layers.skip import SkipLike, SkipTuple
from ..layers.skip_aware import (SkipAwareNormMixin, active_norm, collect_skip_norm_pairs,
                                 make_skip_aware)


class TokenFeatureMap(nn.Module):
    """Returns a token sequence ``(N, L, C)`` as a feature map with channels on dim 1 (a
    view, nothing is copied): ``(N, C, H, W)`` when the token grid ``hw_shape`` is given,
    else ``(N, C, L, 1)`` (every token is a location). Used as the stage-feature module
    of transformer backbones, whose forward hooks see that layout."""

    def forward(self, x: torch.Tensor, hw_shape: Optional[Sequence[int]] = None):
        if hw_shape is None:
            return x.transpose(1, 2).unsqueeze(-1)
        return x.unflatten(1, tuple(hw_shape)).permute(0, 3, 1, 2)


class ADNTransformerEncoderLayer(SkipAwareNormMixin, TransformerEncoderLayer):
    """mmpretrain's encoder layer that can be skipped (``skipped``), with optional
    ``ln1_skip``/``ln2_skip`` siblings and an optional ``feature_tap`` fed its output."""
    norm1_name = 'ln1'
    norm2_name = 'ln2'
    norm_name_attrs = ('norm1_name', 'norm2_name')
    ln1 = active_norm(0)
    ln2 = active_norm(1)

    def forward(self, x):
        if not self.skipped:
            x = super().forward(x)
        if self.feature_tap is not None:
            self.feature_tap(x)
        return x


@MODELS.register_module()
class VisionTransformerADN(AdaptiveDepthMixin, VisionTransformer):
    """Vision Transformer with skippable sub-paths and skip-aware LayerNorm (Adaptive
    Depth Networks), four flags (``'FFFF'`` .. ``'TTTT'``).

    Takes every argument of mmpretrain's
    :class:`~mmpretrain.models.backbones.VisionTransformer`, in its order and with its
    defaults (``arch='base'``, ``patch_size=16`` or ``32`` ...), then the keyword-only
    ``skip``: the sub-network to start with (``'TTFF'``, a list of bools, ``'super'`` or
    ``'base'``). The number of layers must be
    a multiple of 4 and at least 8. Plain ViT checkpoints load; each ``ln*_skip`` starts as
    a copy of its partner.
    """
    num_groups = 4

    def __init__(self, *args, skip: SkipLike = 'super', **kwargs):
        super().__init__(*args, **kwargs)
        num_layers = len(self.layers)
        if num_layers % self.num_groups or num_layers < 2 * self.num_groups:
            raise ValueError(
                f'VisionTransformerADN: {num_layers} encoder layers cannot form '
                f'{self.num_groups} groups of >= 2 layers (one shared, one skippable); '
                f'use a multiple of {self.num_groups}, at least {2 * self.num_groups}')
        self.group_size = num_layers // self.num_groups
        self.num_skippable_stages = self.num_groups
        self.stage_taps = nn.ModuleList(TokenFeatureMap() for _ in range(self.num_groups))
        for idx, layer in enumerate(self.layers):
            make_skip_aware(layer, ADNTransformerEncoderLayer)
            layer.skipped = False
            if self._is_skippable(idx):
                layer.feature_tap = self.stage_taps[idx // self.group_size]
            else:
                layer.feature_tap = None
                layer.add_skip_norms()
        self.set_skip(skip)
        self._fill_skip_norms_on_load()

    def _is_skippable(self, idx: int) -> bool:
        return idx % self.group_size == self.group_size - 1

    # -- adaptive depth -----------------------------------------------------------------
    def _apply_skip(self, skip: SkipTuple) -> None:
        for idx, layer in enumerate(self.layers):
            flag = skip[idx // self.group_size]
            if self._is_skippable(idx):
                layer.skipped = flag
            else:
                layer.set_use_skip_norms(flag)

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        return collect_skip_norm_pairs(self)

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable layers: ``['layers.2', 'layers.5', ...]`` for ViT-B."""
        return [f'layers.{i}' for i in range(len(self.layers)) if self._is_skippable(i)]

    def stage_modules(self) -> List[torch.nn.Module]:
        """One :class:`TokenFeatureMap` per group: its output, ``(N, C, L, 1)``, is the
        group's output tokens (class token included)."""
        return list(self.stage_taps)

    # -- weights ------------------------------------------------------------------------
    def init_weights(self):
        super().init_weights()
        self._copy_skip_norms_unless_pretrained()


VisionTransformerADN.__signature__ = adn_signature(VisionTransformer, VisionTransformerADN)
