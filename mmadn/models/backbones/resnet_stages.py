"""A plain ResNet with any number of blocks per stage.

Used for the baselines of the paper ("-Base": a plain ResNet of the base-net's depth, e.g.
(2, 2, 3, 2) Bottleneck blocks) and as the static form of an exported sub-network. This
module's ``StageResNet`` is mmdet's ResNet (mmdet's registry); the one of
:mod:`.mmpretrain_resnet` is mmpretrain's (mmpretrain's registry).
"""
from typing import Sequence

from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.registry import MODELS


class StageResNetMixin:
    """An upstream ResNet with ``stage_blocks`` blocks per stage. ``block_types``: the
    upstream (BasicBlock, Bottleneck).

    Args:
        depth (int): picks the block type as ResNet does: 18/34 BasicBlock, 50/101/152
            Bottleneck (the stage widths are the same for every depth).
        stage_blocks (Sequence[int]): blocks per stage, one positive integer per stage.
        **kwargs: every other argument of the upstream ResNet.
    """

    block_types: tuple

    def __init__(self, depth: int, stage_blocks: Sequence[int], num_stages: int = 4, **kwargs):
        if depth not in self.arch_settings:
            raise ValueError(f'depth={depth!r}: expected one of {sorted(self.arch_settings)}')
        if not (isinstance(stage_blocks, (list, tuple)) and len(stage_blocks) == num_stages
                and all(isinstance(n, int) and n >= 1 for n in stage_blocks)):
            raise ValueError(f'stage_blocks={stage_blocks!r}: expected {num_stages} positive '
                             'integers, one per stage, e.g. (2, 2, 3, 2)')
        block = self.block_types[0] if depth in (18, 34) else self.block_types[1]
        # read by the upstream __init__ to pick the block type and count
        object.__setattr__(self, 'arch_settings', {depth: (block, tuple(stage_blocks))})
        super().__init__(depth, num_stages=num_stages, **kwargs)
        self.stage_block_counts = tuple(stage_blocks)


@MODELS.register_module()
class StageResNet(StageResNetMixin, ResNet):
    """mmdet's :class:`~mmdet.models.backbones.ResNet` with ``stage_blocks`` blocks per
    stage; its other arguments and their defaults are mmdet's (``norm_eval=True`` ...)."""

    block_types = (BasicBlock, Bottleneck)
