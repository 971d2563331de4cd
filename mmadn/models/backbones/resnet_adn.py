"""ResNet with adaptive depth (ADN): a small change on top of a ResNet of mmdet or mmpretrain.

Each stage is split into shared blocks (always run) and skippable blocks (the specialized
sub-path). Shared blocks own skip-aware norms (``bn1`` + ``bn1_skip`` ...), used while
their stage skips. The stem and the downsample norms are not duplicated.

The ADN part is written once, as mixins on the upstream block, stage and backbone classes.
This module applies them to mmdet's ResNet (``ResNetADN`` in mmdet's registry);
:mod:`.mmpretrain_resnet` applies them to mmpretrain's (``ResNetADN`` in mmpretrain's
registry). Each takes its upstream class's arguments, positions and defaults.
"""
import itertools
import re
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmdet.registry import MODELS
from mmengine.logging import print_log

from ...utils.torch_compat import register_load_state_dict_pre_hook
from ..layers.adaptive_depth import AdaptiveDepthMixin, CheckpointMismatchError, adn_signature
from ..layers.checkpointing import CheckpointedBlockMixin
from ..layers.skip import SkipLike, SkipTuple, parse_skip, resolve_num_shared_blocks
from ..layers.skip_aware import SkipAwareNormMixin
from ..layers.skippable import SkippableBlocksMixin


class ADNBlockMixin(CheckpointedBlockMixin, SkipAwareNormMixin):
    """A residual block with skip-aware norms (added by :meth:`add_skip_norms` to the shared
    blocks) and non-reentrant ``with_cp`` that replays the norm set in backward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_skip_aware()


class ADNResLayerMixin(SkippableBlocksMixin):
    """A ResNet stage whose blocks from ``num_shared_blocks`` on can be skipped (see
    :mod:`mmadn.models.layers.skippable`: the flag, and the ``torch.cond`` while a graph is
    traced in eval mode).

    With ``skip_aware_norms=False`` the shared blocks get no ``*_skip`` norms and use the
    same norms whether or not the stage skips (the "without skip-aware BN" ablation).
    """

    def __init__(self, *args, num_shared_blocks: int, skip_aware_norms: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if skip_aware_norms:
            for block in itertools.islice(self._modules.values(), num_shared_blocks):
                block.add_skip_norms()
        self.init_skippable(num_shared_blocks)


class ResNetADNMixin(AdaptiveDepthMixin):
    """The ADN part of a ResNet-ADN, on top of an upstream ResNet class.

    ``__init__`` takes the upstream arguments as they are (positions, defaults, errors and
    attributes stay the upstream's) and the ADN arguments, keyword-only. A subclass names the
    ADN classes of the upstream blocks (``adn_blocks``) and of its stage (``adn_res_layer``).
    """

    adn_blocks: Dict[type, type]  # upstream block class -> its ADN class
    adn_res_layer: type

    def __init__(self, *args, num_shared_blocks=None, skip: SkipLike = 'super',
                 skip_aware_norms: bool = True, **kwargs):
        # read by make_res_layer while the upstream class builds the stages
        self.__dict__.update(_adn_num_shared=num_shared_blocks,
                             skip_aware_norms=bool(skip_aware_norms))
        super().__init__(*args, **kwargs)
        self.num_shared_blocks = self.__dict__.pop('_adn_num_shared')
        self.num_skippable_stages = len(self.res_layers)
        self.set_skip(skip)
        register_load_state_dict_pre_hook(self, self._load_pre_hook)

    def make_res_layer(self, block, **kwargs):
        stage = len(self.res_layers)
        if stage == 0:  # the upstream class has set stage_blocks
            self._adn_num_shared = resolve_num_shared_blocks(self._adn_num_shared,
                                                             self.stage_blocks,
                                                             f'depth {self.depth}')
        return self.adn_res_layer(block=self.adn_blocks[block],
                                  num_shared_blocks=self._adn_num_shared[stage],
                                  skip_aware_norms=self.skip_aware_norms, **kwargs)

    # -- adaptive depth -----------------------------------------------------------------
    def _apply_skip(self, skip: SkipTuple) -> None:
        for name, flag in zip(self.res_layers, skip):
            getattr(self, name).set_skip_subpath(flag)

    def skip_flag_buffers(self) -> List[str]:
        return [f'{name}.skip_flag' for name in self.res_layers]

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        pairs = []
        for name in self.res_layers:
            for idx, block in enumerate(getattr(self, name)):
                pairs += [(f'{name}.{idx}.{s}', f'{name}.{idx}.{p}')
                          for s, p in block.skip_norm_pairs()]
        return pairs

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable blocks, e.g. ``['layer1.2', 'layer2.2', ...]``."""
        return [
            f'{name}.{idx}' for name, k in zip(self.res_layers, self.num_shared_blocks)
            for idx in range(k, len(getattr(self, name)))
        ]

    def stage_modules(self) -> List[torch.nn.Module]:
        """The modules whose outputs are the stage features distilled during training."""
        return [getattr(self, name) for name in self.res_layers]

    # -- static export (mmadn.deploy) ---------------------------------------------------
    _ADN_ONLY_ARGS = ('num_shared_blocks', 'skip', 'skip_aware_norms', 'init_cfg', 'pretrained')

    def static_stage_blocks(self, skip: SkipLike = None) -> Tuple[int, ...]:
        """Blocks per stage of the sub-network ``skip`` (default: the active one)."""
        skip = self._skip if skip is None else parse_skip(skip, self.num_skippable_stages)
        return tuple(k if s else len(getattr(self, name))
                     for name, k, s in zip(self.res_layers, self.num_shared_blocks, skip))

    def static_cfg(self, cfg: dict, skip: SkipLike = None) -> dict:
        """The config of a plain ``StageResNet`` (of the same registry) that computes
        sub-network ``skip``.

        ``cfg`` is this backbone's config: every ResNet argument in it is kept, the ADN ones
        are dropped, and so is ``init_cfg`` (the exported checkpoint holds every weight).
        """
        static = {k: v for k, v in dict(cfg).items() if k not in self._ADN_ONLY_ARGS + ('type', )}
        scope = str(cfg.get('type', '')).rpartition('.')[0]
        static.update(type=f'{scope}.StageResNet' if scope else 'StageResNet',
                      stage_blocks=self.static_stage_blocks(skip), norm_eval=self.norm_eval,
                      init_cfg=None)
        return static

    def static_state_dict(self, skip: SkipLike = None) -> Dict[str, torch.Tensor]:
        """The weights of :meth:`static_cfg`'s ``StageResNet`` (keys relative to the
        backbone): the skipped blocks are dropped; in a skipping stage each ``*_skip`` norm
        takes its partner's keys, in the other stages the ``*_skip`` norms are dropped."""
        skip = self._skip if skip is None else parse_skip(skip, self.num_skippable_stages)
        skipping = {name for name, s in zip(self.res_layers, skip) if s}
        dropped = tuple(block + '.' for block in self.skippable_blocks()
                        if block.split('.')[0] in skipping)
        target = {}  # norm module name -> its name in the static model (None: dropped)
        for skip_name, partner in self.skip_norm_pairs():
            in_skipping_stage = skip_name.split('.')[0] in skipping
            target[skip_name] = partner if in_skipping_stage else None
            if in_skipping_stage:
                target[partner] = None
        static = {}
        for key, value in self.state_dict().items():
            if key.startswith(dropped):
                continue
            module, _, field = key.rpartition('.')
            module = target.get(module, module)
            if module is not None:
                static[f'{module}.{field}'] = value
        return static

    # -- weights ------------------------------------------------------------------------
    def init_weights(self):
        super().init_weights()  # the upstream init, zero_init_residual included
        self._copy_skip_norms_unless_pretrained()

    def split_of_skip_norms(self, skip_norms: List[str]) -> Optional[str]:
        blocks: Dict[str, set] = {}
        for name in skip_norms:
            m = re.match(r'(layer\d+)\.(\d+)\.', name)
            if m:
                blocks.setdefault(m.group(1), set()).add(int(m.group(2)))
        return 'num_shared_blocks=' + str(tuple(len(blocks.get(n, ())) for n in self.res_layers))

    def own_split(self) -> Optional[str]:
        return f'num_shared_blocks={tuple(self.num_shared_blocks)}'

    def _load_pre_hook(self, module, state_dict: Dict[str, torch.Tensor], prefix: str, *args,
                       **kwargs):
        self._check_checkpoint_arch(state_dict, prefix)
        self._adopt_other_layout(state_dict, prefix)
        self._fill_missing_skip_norms(state_dict, prefix)

    def _adopt_other_layout(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> None:
        """mmdet's and mmpretrain's ResNets hold the same deep-stem and average-pool
        downsample weights under other names (mmdet: ``stem.0``, ``stem.1``, ``stem.3`` ...
        and an ``AvgPool2d`` first in every such downsample; mmpretrain: ``stem.0.conv``,
        ``stem.0.bn`` ... and the ``AvgPool2d`` only where the stride is 2). A checkpoint in
        the other layout is renamed here, tensor by tensor in order, where the fields and
        shapes agree (else load_state_dict reports the keys as usual)."""
        containers = {'stem': getattr(self, 'stem', None)}
        containers.update(
            (f'{n}.0.downsample', getattr(self, n)[0].downsample) for n in self.res_layers)
        renamed = []
        for name, container in containers.items():
            if container is None:
                continue
            ours = container.state_dict()
            theirs = [k for k in state_dict if k.startswith(f'{prefix}{name}.')]
            if not theirs or {f'{prefix}{name}.{k}' for k in ours} == set(theirs):
                continue
            if len(theirs) != len(ours) or any(
                    key.rpartition('.')[2] != own.rpartition('.')[2]
                    or state_dict[key].shape != ours[own].shape for key, own in zip(theirs, ours)):
                continue
            values = [state_dict.pop(key) for key in theirs]
            state_dict.update((f'{prefix}{name}.{own}', v) for own, v in zip(ours, values))
            renamed.append(name)
        if renamed:
            print_log(
                f'{type(self).__name__}: the checkpoint holds {", ".join(renamed)} in '
                'the layout of the other library\'s ResNet (mmdet / mmpretrain); '
                'loaded under this one\'s names.', logger='current')

    def _check_checkpoint_arch(self, state_dict, prefix: str) -> None:
        """Refuse a ResNet checkpoint of another depth with a clear message."""
        pattern = re.compile(re.escape(prefix) + r'layer(\d+)\.(\d+)\.(conv\d)\.weight$')
        blocks: Dict[int, int] = {}
        has_conv3 = None
        for key in state_dict:
            m = pattern.match(key)
            if m:
                stage, idx = int(m.group(1)), int(m.group(2))
                blocks[stage] = max(blocks.get(stage, 0), idx + 1)
                if m.group(3) == 'conv3':
                    has_conv3 = True
                elif has_conv3 is None:
                    has_conv3 = False
        if not blocks:
            return
        found = tuple(blocks.get(i + 1, 0) for i in range(len(self.res_layers)))
        expected = tuple(len(getattr(self, n)) for n in self.res_layers)
        bottleneck = hasattr(getattr(self, self.res_layers[0])[0], 'conv3')
        if found != expected or has_conv3 != bottleneck:
            kind = 'Bottleneck' if has_conv3 else 'BasicBlock'
            raise CheckpointMismatchError(
                f'checkpoint{" (prefix " + repr(prefix) + ")" if prefix else ""} holds a '
                f'ResNet with {found} {kind} blocks per stage, but {type(self).__name__}'
                f'(depth={self.depth}) expects {expected} '
                f'{"Bottleneck" if bottleneck else "BasicBlock"} blocks: load a depth-'
                f'{self.depth} ResNet / ResNet-ADN checkpoint or change `depth`')


class ADNBasicBlock(ADNBlockMixin, BasicBlock):
    norm_name_attrs = ('norm1_name', 'norm2_name')


class ADNBottleneck(ADNBlockMixin, Bottleneck):
    norm_name_attrs = ('norm1_name', 'norm2_name', 'norm3_name')


class ADNResLayer(ADNResLayerMixin, ResLayer):
    pass


@MODELS.register_module()
class ResNetADN(ResNetADNMixin, ResNet):
    """mmdet's :class:`~mmdet.models.backbones.ResNet` with skippable sub-paths and
    skip-aware BatchNorm (Adaptive Depth Networks); ``type='ResNetADN'`` in mmdet's registry.

    Takes every argument of mmdet's ``ResNet``, in its order and with its defaults
    (``norm_eval=True``, ``out_indices=(0, 1, 2, 3)``, ``stem_channels=None``: the
    ``base_channels`` ...), then the keyword-only ADN arguments below. One flag per stage
    says whether that stage skips its skippable blocks; ``model.backbone.set_skip('TTFF')``
    or ``with backbone.skipping('base'): ...`` switch the depth at run time.
    ``avg_down=True`` gives the authors' 'd' variant (average-pool downsample; add
    ``deep_stem=True`` for mmdet's ResNetV1d). ``with_cp=True`` checkpoints each block
    non-reentrantly (see :mod:`mmadn.models.layers.checkpointing`).

    Keyword-only args:
        num_shared_blocks (Sequence[int], optional): shared (never skipped) blocks per
            stage; each must be in ``[1, blocks - 1]``. Default: the authors' rule
            ``min(blocks - 1, (blocks + 1) // 2)``, e.g. (2, 2, 3, 2) for ResNet-50.
        skip (str | Sequence[bool]): the sub-network to start with: ``'TTFF'``, a list of
            bools, ``'super'`` (default, all blocks) or ``'base'`` (all skippable blocks
            skipped).
        skip_aware_norms (bool): give the shared blocks skip-aware norms (``bn1_skip`` ...).
            Default True (ADN). False builds the paper's ablation "without skip-aware BN":
            no ``*_skip`` modules, the shared blocks use one set of norms for every
            sub-network (a checkpoint holding ``*_skip`` keys then has unexpected keys).
    """

    adn_blocks = {BasicBlock: ADNBasicBlock, Bottleneck: ADNBottleneck}
    adn_res_layer = ADNResLayer


ResNetADN.__signature__ = adn_signature(ResNet, ResNetADNMixin)
