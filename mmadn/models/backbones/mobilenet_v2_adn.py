"""MobileNetV2 with adaptive depth (ADN): a small change on top of mmpretrain's MobileNetV2.

The stages with two or more inverted-residual blocks (24, 32, 64, 96 and 160 channels at
width 1.0) are the five skippable stages; blocks ``i >= (n + 1) // 2`` of a stage of ``n``
blocks form its specialized sub-path (1, 1, 2, 1, 1 blocks). The other blocks of those
stages own skip-aware BatchNorms (``bn`` + ``bn_skip`` in each ConvModule). As in the
authors' code, the stem conv and the single-block stage before the first skippable stage
switch their norms with the first flag; the single-block stage after the last skippable
stage and the final 1x1 conv with the last flag.
"""
from typing import List, Tuple

import torch
from mmcv.cnn import ConvModule
from mmpretrain.models.backbones.mobilenet_v2 import InvertedResidual, MobileNetV2
from mmpretrain.registry import MODELS
from torch import nn

from ..layers.adaptive_depth import AdaptiveDepthMixin, adn_signature
from ..layers.checkpointing import CheckpointedBlockMixin
from ..layers.skip import SkipLike, SkipTuple, default_num_shared_blocks
from ..layers.skip_aware import (ADNConvModule, SkipAwareNormMixin, collect_skip_norm_pairs,
                                 make_skip_aware, swap_class)


class ADNInvertedResidual(CheckpointedBlockMixin, InvertedResidual):
    """mmpretrain's inverted-residual block with non-reentrant ``with_cp`` that replays the
    norm sets of its skip-aware ConvModules in backward."""


class ADNInvertedResidualStage(nn.Sequential):
    """A stage of inverted-residual blocks whose blocks from ``num_shared_blocks`` on are
    skipped while ``skip_subpath`` is True."""

    def __init__(self, blocks, num_shared_blocks: int):
        super().__init__(*blocks)
        self.num_shared_blocks = num_shared_blocks
        self.skip_subpath = False

    def forward(self, x):
        if not self.skip_subpath:
            return super().forward(x)
        for block in list(self._modules.values())[:self.num_shared_blocks]:
            x = block(x)
        return x


@MODELS.register_module()
class MobileNetV2ADN(AdaptiveDepthMixin, MobileNetV2):
    """MobileNetV2 with skippable sub-paths and skip-aware BatchNorm (Adaptive Depth
    Networks), five flags (``'FFFFF'`` .. ``'TTTTT'``).

    Takes every argument of mmpretrain's
    :class:`~mmpretrain.models.backbones.MobileNetV2`, in its order and with its defaults
    (``widen_factor``, ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp`` ...),
    then the keyword-only ``skip``: the sub-network to start with (``'TFFFF'``, a list of
    bools, ``'super'`` or ``'base'``). Plain MobileNetV2 checkpoints load; each
    ``bn_skip`` starts as a copy of its ``bn``. ``with_cp=True`` checkpoints each block
    non-reentrantly (see :mod:`mmadn.models.layers.checkpointing`).
    """

    def __init__(self, *args, skip: SkipLike = 'super', **kwargs):
        super().__init__(*args, **kwargs)
        stage_names = self.layers[:-1]  # 'layer1'..'layer7'; the last entry is 'conv2'
        self.skippable_stages = [n for n in stage_names if len(getattr(self, n)) >= 2]
        self.num_skippable_stages = len(self.skippable_stages)
        if self.num_skippable_stages == 0:
            raise ValueError('MobileNetV2ADN needs at least one stage of two or more blocks')
        # which flag switches the norms of each skip-aware ConvModule
        self._norm_followers: List[Tuple[int, SkipAwareNormMixin]] = []
        self._follow(self.conv1, 0)
        flag = 0
        for name in stage_names:
            stage = getattr(self, name)
            if name in self.skippable_stages:
                flag = self.skippable_stages.index(name)
                blocks = list(stage)[:stage.num_shared_blocks]
            else:  # a single-block stage follows the nearest skippable stage
                blocks = list(stage)
            for block in blocks:
                for conv in block.conv:
                    self._follow(conv, flag)
        self._follow(self.conv2, self.num_skippable_stages - 1)
        self.set_skip(skip)
        self._fill_skip_norms_on_load()

    def make_layer(self, out_channels, num_blocks, stride, expand_ratio):
        stage = super().make_layer(out_channels, num_blocks, stride, expand_ratio)
        for block in stage:
            swap_class(block, ADNInvertedResidual)
        num_shared = default_num_shared_blocks(num_blocks) if num_blocks >= 2 else num_blocks
        return ADNInvertedResidualStage(stage, num_shared)

    def _follow(self, conv: ConvModule, flag: int) -> None:
        if conv.with_norm:
            make_skip_aware(conv, ADNConvModule).add_skip_norms()
            self._norm_followers.append((flag, conv))

    # -- adaptive depth -----------------------------------------------------------------
    def _apply_skip(self, skip: SkipTuple) -> None:
        for name, flag in zip(self.skippable_stages, skip):
            getattr(self, name).skip_subpath = flag
        for idx, conv in self._norm_followers:
            conv.set_use_skip_norms(skip[idx])

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        return collect_skip_norm_pairs(self)

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable blocks: ``['layer2.1', 'layer3.2', 'layer4.2', ...]``."""
        return [
            f'{name}.{idx}' for name in self.skippable_stages
            for idx in range(getattr(self, name).num_shared_blocks, len(getattr(self, name)))
        ]

    def stage_modules(self) -> List[torch.nn.Module]:
        """The skippable stages, whose outputs are the distilled stage features."""
        return [getattr(self, name) for name in self.skippable_stages]

    # -- weights ------------------------------------------------------------------------
    def init_weights(self):
        super().init_weights()
        self._copy_skip_norms_unless_pretrained()


MobileNetV2ADN.__signature__ = adn_signature(MobileNetV2, MobileNetV2ADN)
