"""ResNet with adaptive depth (ADN): a small change on top of mmdet's ResNet.

Each stage is split into shared blocks (always run) and skippable blocks (the specialized
sub-path). Shared blocks own skip-aware norms (``bn1`` + ``bn1_skip`` ...), used while
their stage skips. The stem and the downsample norms are not duplicated.
"""
import contextlib
import itertools
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.model import constant_init
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ...utils.torch_compat import (has_cond, is_compiling, is_exporting,
                                   register_load_state_dict_pre_hook)
from ..layers.adaptive_depth import AdaptiveDepthMixin, CheckpointMismatchError
from ..layers.skip import SkipLike, SkipTuple, default_num_shared_blocks, parse_skip
from ..layers.skip_aware import SkipAwareNormMixin


class _ADNBlockMixin(SkipAwareNormMixin):
    """Skip-aware norms plus non-reentrant checkpointing (``with_cp``).

    mmdet's blocks checkpoint with the reentrant implementation, which breaks two passes in
    one DDP step; here the whole block is checkpointed non-reentrantly, and the norm set in
    use at forward time is replayed when the block is recomputed in backward. The
    recomputation leaves the BatchNorm running statistics alone (they are updated once, by
    the forward), so they do not depend on when the backward runs.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs):
        super().__init__(*args, with_cp=False, **kwargs)
        self.adn_with_cp = with_cp
        self._init_skip_aware()

    def forward(self, x):
        if self.adn_with_cp and x.requires_grad:
            return checkpoint(self._forward_with_norm_set, x, self.use_skip_norms,
                              use_reentrant=False, context_fn=self._checkpoint_contexts)
        return super().forward(x)

    def _checkpoint_contexts(self):
        return contextlib.nullcontext(), self._frozen_running_stats()

    @contextlib.contextmanager
    def _frozen_running_stats(self):
        """The recomputation runs as the forward did; its running-statistics update is
        undone."""
        stats = [(buf, buf.clone()) for m in self.modules()
                 if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
                 for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
                 if buf is not None]
        try:
            yield
        finally:
            with torch.no_grad():
                for buf, value in stats:
                    buf.copy_(value)

    def _forward_with_norm_set(self, x, use_skip_norms: bool):
        with self._norm_set(use_skip_norms):
            return super().forward(x)


class ADNBasicBlock(_ADNBlockMixin, BasicBlock):
    norm_name_attrs = ('norm1_name', 'norm2_name')


class ADNBottleneck(_ADNBlockMixin, Bottleneck):
    norm_name_attrs = ('norm1_name', 'norm2_name', 'norm3_name')


class ADNResLayer(ResLayer):
    """A ResNet stage whose blocks from ``num_shared_blocks`` on can be skipped.

    With ``skip_aware_norms=False`` the shared blocks get no ``*_skip`` norms and use the
    same norms whether or not the stage skips (the "without skip-aware BN" ablation).

    The stage's flag is kept twice: ``skip_subpath`` (eager mode runs a Python ``if`` on
    it) and the non-persistent 0-dim bool buffer ``skip_flag``. In eval mode, while
    ``torch.compile`` or ``torch.export`` traces, the stage is a ``torch.cond`` on the
    buffer between its two sub-paths, so one graph serves both and a depth switch only
    writes the buffer. In training mode (the norms update their statistics, which a
    ``torch.cond`` branch may not do) the Python ``if`` is traced: one graph per depth.
    """

    def __init__(self, *args, num_shared_blocks: int, skip_aware_norms: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_shared_blocks = num_shared_blocks
        self.skip_subpath = False  # True: only the shared blocks run
        self.register_buffer('skip_flag', torch.zeros((), dtype=torch.bool), persistent=False)
        for block in itertools.islice(self._modules.values(), num_shared_blocks):
            if skip_aware_norms:
                block.add_skip_norms()
            block.norm_set_view(True)  # made now, not while a graph is traced

    def set_skip_subpath(self, flag: bool) -> None:
        self.skip_subpath = bool(flag)
        for block in itertools.islice(self._modules.values(), self.num_shared_blocks):
            block.set_use_skip_norms(self.skip_subpath)
        with torch.no_grad():
            self.skip_flag.fill_(self.skip_subpath)

    def forward(self, x):
        if not self.training and has_cond() and (is_compiling() or is_exporting()):
            if not is_exporting():
                # inductor compiles each branch for the strides it was traced with and may
                # lay the stage's input out channels-last: fix the layout on both sides
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.cond(self.skip_flag, self._shared_path, self._full_path, (x, ))
        if not self.skip_subpath:
            return super().forward(x)
        for block in itertools.islice(self._modules.values(), self.num_shared_blocks):
            x = block(x)
        return x

    def _shared_path(self, x):
        """The stage while it skips: the shared blocks with their skip norms."""
        for block in itertools.islice(self._modules.values(), self.num_shared_blocks):
            x = block.norm_set_view(True)(x)
        return x

    def _full_path(self, x):
        """Every block, the shared ones with their normal norms."""
        for i, block in enumerate(self._modules.values()):
            x = block.norm_set_view(False)(x) if i < self.num_shared_blocks else block(x)
        return x


class ResNetADN(AdaptiveDepthMixin, ResNet):
    """ResNet with skippable sub-paths and skip-aware BatchNorm (Adaptive Depth Networks).

    Accepts every argument of mmdet's :class:`~mmdet.models.backbones.ResNet` plus the ones
    below. One flag per stage says whether that stage skips its skippable blocks;
    ``model.backbone.set_skip('TTFF')`` or ``with backbone.skipping('base'): ...`` switch
    the depth at run time. ``avg_down=True`` gives the authors' 'd' variant (average-pool
    downsample; add ``deep_stem=True`` for mmdet's ResNetV1d).

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        num_shared_blocks (Sequence[int], optional): shared (never skipped) blocks per
            stage; each must be in ``[1, blocks - 1]``. Default: the authors' rule
            ``min(blocks - 1, (blocks + 1) // 2)``, e.g. (2, 2, 3, 2) for ResNet-50.
        skip (str | Sequence[bool]): the sub-network to start with: ``'TTFF'``, a list of
            bools, ``'super'`` (default, all blocks) or ``'base'`` (all skippable blocks
            skipped).
        norm_eval (bool): keep norms in eval mode while training. Default False (the
            classification setting); detection configs set it to True.
        with_cp (bool): non-reentrant activation checkpointing of each block.
        skip_aware_norms (bool): give the shared blocks skip-aware norms (``bn1_skip`` ...).
            Default True (ADN). False builds the paper's ablation "without skip-aware BN":
            no ``*_skip`` modules, the shared blocks use one set of norms for every
            sub-network (a checkpoint holding ``*_skip`` keys then has unexpected keys).
    """

    arch_settings = {
        18: (ADNBasicBlock, (2, 2, 2, 2)),
        34: (ADNBasicBlock, (3, 4, 6, 3)),
        50: (ADNBottleneck, (3, 4, 6, 3)),
        101: (ADNBottleneck, (3, 4, 23, 3)),
        152: (ADNBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, num_shared_blocks: Optional[Sequence[int]] = None, skip='super',
                 norm_eval: bool = False, num_stages: int = 4, skip_aware_norms: bool = True,
                 **kwargs):
        if depth not in self.arch_settings:
            raise ValueError(f'depth={depth!r}: expected one of '
                             f'{sorted(self.arch_settings)}')
        stage_blocks = self.arch_settings[depth][1][:num_stages]
        # read by make_res_layer while the parent builds the stages
        object.__setattr__(self, '_pending_num_shared',
                           self._resolve_num_shared(num_shared_blocks, stage_blocks, depth))
        self.__dict__['skip_aware_norms'] = bool(skip_aware_norms)
        super().__init__(depth, num_stages=num_stages, norm_eval=norm_eval, **kwargs)
        # mmdet zero-inits the residual norms only under its default init_cfg
        self._default_init = kwargs.get('init_cfg') is None and kwargs.get('pretrained') is None
        self.num_shared_blocks = self.__dict__.pop('_pending_num_shared')
        self.num_skippable_stages = len(self.res_layers)
        self.set_skip(skip)
        register_load_state_dict_pre_hook(self, self._load_pre_hook)

    @staticmethod
    def _resolve_num_shared(num_shared, stage_blocks, depth) -> Tuple[int, ...]:
        if num_shared is None:
            return tuple(default_num_shared_blocks(n) for n in stage_blocks)
        ok = isinstance(num_shared, (list, tuple)) and len(num_shared) == len(stage_blocks) \
            and all(isinstance(k, int) and 1 <= k <= n - 1
                    for k, n in zip(num_shared, stage_blocks))
        if not ok:
            ranges = ', '.join(f'1..{n - 1}' for n in stage_blocks)
            raise ValueError(
                f'num_shared_blocks={num_shared!r}: expected {len(stage_blocks)} integers, one '
                f'per stage, within ({ranges}) for depth {depth} (blocks per stage '
                f'{tuple(stage_blocks)}); every stage keeps at least one shared and one '
                'skippable block')
        return tuple(num_shared)

    def make_res_layer(self, **kwargs):
        stage = len(self.res_layers)
        return ADNResLayer(num_shared_blocks=self._pending_num_shared[stage],
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
        """The config of a plain :class:`StageResNet` that computes sub-network ``skip``.

        ``cfg`` is this backbone's config: every mmdet ``ResNet`` argument in it is kept,
        the ADN ones are dropped, and so is ``init_cfg`` (the exported checkpoint holds
        every weight).
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
        super().init_weights()
        pretrained = any(
            isinstance(c, dict) and c.get('type') == 'Pretrained'
            for c in (self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]))
        if not pretrained:
            if self.zero_init_residual and self._default_init:
                # mmdet's ResNet sets this up only for its own block classes
                for layer in self.stage_modules():
                    for block in layer:
                        last = getattr(block, 'norm3_name', None) or block.norm2_name
                        constant_init(block._modules[last], 0)
            # random init: the skip norms start equal to their partners
            self.copy_skip_norms_from_partners()

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
        self._fill_missing_skip_norms(state_dict, prefix)

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
        bottleneck = self.block is ADNBottleneck
        if found != expected or has_conv3 != bottleneck:
            kind = 'Bottleneck' if has_conv3 else 'BasicBlock'
            raise CheckpointMismatchError(
                f'checkpoint{" (prefix " + repr(prefix) + ")" if prefix else ""} holds a '
                f'ResNet with {found} {kind} blocks per stage, but {type(self).__name__}'
                f'(depth={self.depth}) expects {expected} '
                f'{"Bottleneck" if bottleneck else "BasicBlock"} blocks: load a depth-'
                f'{self.depth} ResNet / ResNet-ADN checkpoint or change `depth`')

    def train(self, mode: bool = True):
        super().train(mode)
        return self


MMDET_MODELS.register_module(module=ResNetADN)
MMPRETRAIN_MODELS.register_module(module=ResNetADN)
