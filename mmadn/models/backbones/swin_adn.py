"""Swin Transformer with adaptive depth (ADN): a small change on top of mmpretrain's
SwinTransformer, registered in mmpretrain's and mmdet's MODELS.

Each stage keeps its first ``num_shared_blocks`` blocks (default
``min(d - 1, (d + 1) // 2)``, Swin-T: 1, 1, 3, 1 of 2, 2, 6, 2) and skips the rest while its
flag is True. The kept blocks own skip-aware LayerNorms (``norm1_skip``, ``norm2_skip``);
the patch-merging norm in front of a stage (``stages.{i-1}.downsample.norm_skip``) follows
that stage's flag. The stage features that
the training hook distils are the stage outputs before patch merging, as ``(N, C, H, W)``.
With ``out_indices=(0, 1, 2, 3)`` the backbone gives the multi-scale maps an FPN takes.
"""
import re
from typing import Dict, List, Optional, Tuple

import torch
from mmcv.cnn.bricks.transformer import PatchMerging
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.models.backbones.swin_transformer import (SwinBlock, SwinBlockSequence,
                                                          SwinTransformer)
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from ..layers.adaptive_depth import AdaptiveDepthMixin, adn_signature
from ..layers.checkpointing import CheckpointedBlockMixin
from ..layers.skip import SkipLike, SkipTuple, resolve_num_shared_blocks
from ..layers.skip_aware import (SkipAwareNormMixin, active_norm, collect_skip_norm_pairs,
                                 make_skip_aware)
from .vit_adn import TokenFeatureMap


class ADNSwinBlock(CheckpointedBlockMixin, SkipAwareNormMixin, SwinBlock):
    """mmpretrain's Swin block with ``norm1_skip``/``norm2_skip`` siblings in a shared block
    (its forward reads ``self.norm1``/``self.norm2``, the mixin's properties) and
    non-reentrant ``with_cp`` that replays the norm set in backward."""
    norm1_name = 'norm1'
    norm2_name = 'norm2'
    norm_name_attrs = ('norm1_name', 'norm2_name')


class ADNPatchMerging(SkipAwareNormMixin, PatchMerging):
    """mmcv's PatchMerging with a ``norm_skip`` sibling."""
    norm_name = 'norm'
    norm_name_attrs = ('norm_name', )
    norm = active_norm(0)


class ADNSwinBlockSequence(SwinBlockSequence):
    """A Swin stage whose blocks from ``num_shared_blocks`` on are skipped while
    ``skip_subpath`` is True; its block output goes through ``feature_tap`` (the stage feature)."""

    def forward(self, x, in_shape, do_downsample=True):
        blocks = self.blocks[:self.num_shared_blocks] if self.skip_subpath else self.blocks
        for block in blocks:
            x = block(x, in_shape)
        self.feature_tap(x, in_shape)
        if self.downsample is not None and do_downsample:
            return self.downsample(x, in_shape)
        return x, in_shape


class SwinTransformerADN(AdaptiveDepthMixin, SwinTransformer):
    """Swin Transformer with skippable sub-paths and skip-aware LayerNorm (Adaptive Depth
    Networks), one flag per stage (``'FFFF'`` .. ``'TTTT'``).

    Takes every argument of mmpretrain's
    :class:`~mmpretrain.models.backbones.SwinTransformer`, in its order and with its
    defaults (``arch='tiny'``, ``out_indices=(3, )``, ``with_cp``, ``out_after_downsample``,
    ``pad_small_map`` ...), in mmpretrain's and in mmdet's registry alike (mmdet's own
    ``SwinTransformer`` is another class, with other arguments), then the keyword-only
    ADN arguments:

    Keyword-only args:
        num_shared_blocks (Sequence[int], optional): kept (never skipped) blocks per stage,
            each in ``[1, depth - 1]``. Default: the authors' rule
            ``min(depth - 1, (depth + 1) // 2)``, (1, 1, 3, 1) for Swin-T.
        skip (str | Sequence[bool]): the sub-network to start with (``'TTFF'``, a list of
            bools, ``'super'`` or ``'base'``).

    Every stage needs at least two blocks. Plain mmpretrain Swin checkpoints load; each
    ``*_skip`` norm starts as a copy of its partner. ``with_cp=True`` checkpoints each block
    non-reentrantly (see :mod:`mmadn.models.layers.checkpointing`).
    """

    def __init__(self, *args, num_shared_blocks=None, skip: SkipLike = 'super', **kwargs):
        super().__init__(*args, **kwargs)
        self.num_shared_blocks = resolve_num_shared_blocks(num_shared_blocks, self.depths,
                                                           f'depths={list(self.depths)}')
        self.num_skippable_stages = len(self.stages)
        for stage, num_shared in zip(self.stages, self.num_shared_blocks):
            stage.__class__ = ADNSwinBlockSequence
            stage.num_shared_blocks = num_shared
            stage.skip_subpath = False
            stage.feature_tap = TokenFeatureMap()
            for idx, block in enumerate(stage.blocks):
                make_skip_aware(block, ADNSwinBlock)
                if idx < num_shared:
                    block.add_skip_norms()
            if stage.downsample is not None and stage.downsample.norm is not None:
                make_skip_aware(stage.downsample, ADNPatchMerging).add_skip_norms()
        self.set_skip(skip)
        self._fill_skip_norms_on_load()

    # -- adaptive depth -----------------------------------------------------------------
    def _apply_skip(self, skip: SkipTuple) -> None:
        for idx, (stage, flag) in enumerate(zip(self.stages, skip)):
            stage.skip_subpath = flag
            for block in stage.blocks[:stage.num_shared_blocks]:
                block.set_use_skip_norms(flag)
            if idx > 0 and isinstance(self.stages[idx - 1].downsample, ADNPatchMerging):
                self.stages[idx - 1].downsample.set_use_skip_norms(flag)

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        return collect_skip_norm_pairs(self)

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable blocks: ``['stages.0.blocks.1', 'stages.1.blocks.1',
        'stages.2.blocks.3', ...]`` for Swin-T."""
        return [
            f'stages.{i}.blocks.{j}' for i, stage in enumerate(self.stages)
            for j in range(stage.num_shared_blocks, len(stage.blocks))
        ]

    def stage_modules(self) -> List[torch.nn.Module]:
        """Each stage's :class:`TokenFeatureMap`: its output is the stage output
        ``(N, C, H, W)`` before patch merging (and before the ``norm{i}`` out norms)."""
        return [stage.feature_tap for stage in self.stages]

    # -- weights ------------------------------------------------------------------------
    def init_weights(self):
        super().init_weights()
        self._copy_skip_norms_unless_pretrained()

    def split_of_skip_norms(self, skip_norms: List[str]) -> Optional[str]:
        blocks: Dict[int, set] = {}
        for name in skip_norms:
            m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.', name)
            if m:
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        return 'num_shared_blocks=' + str(
            tuple(len(blocks.get(i, ())) for i in range(len(self.stages))))

    def own_split(self) -> Optional[str]:
        return f'num_shared_blocks={tuple(self.num_shared_blocks)}'

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # mmpretrain renames the keys of old checkpoints for its own class only
        version = local_metadata.get('version', None)
        if version is None or version < 2:
            last = len(self.stages) - 1
            for key in [k for k in state_dict if k.startswith(prefix + 'norm.')]:
                new_key = prefix + f'norm{last}.' + key[len(prefix + 'norm.'):]
                state_dict[new_key] = state_dict.pop(key)
        if version is None or version < 3:
            for key in [k for k in state_dict if k.startswith(prefix) and 'attn_mask' in k]:
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


SwinTransformerADN.__signature__ = adn_signature(SwinTransformer, SwinTransformerADN)
MMPRETRAIN_MODELS.register_module(module=SwinTransformerADN)
MMDET_MODELS.register_module(module=SwinTransformerADN)
