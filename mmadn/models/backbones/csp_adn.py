"""CSPNeXt (RTMDet) and CSPDarknet (YOLOX) with adaptive depth (ADN): a small change on
top of mmdet's classes.

mmdet builds each stage as ``nn.Sequential(conv, [SPPBottleneck,] CSPLayer)``. Every stage
whose ``CSPLayer`` has residual blocks and at least two of them is a skippable stage: its
first ``min(n - 1, (n + 1) // 2)`` blocks are shared, the rest form its specialized
sub-path, and the shared blocks' ConvModules get skip-aware norms (``bn`` + ``bn_skip``).
The last stage (SPP, ``add_identity=False``) and stages of one block do not skip. Its
``stemN``/downsample convs, the CSP convs around the blocks and the SPP are shared by every
sub-network and keep one norm.

A detector whose neck is an ADN neck (:class:`~mmadn.models.necks.CSPNeXtPAFPNADN`,
:class:`~mmadn.models.necks.YOLOXPAFPNADN`) has one depth for both: the backbone's flags
are followed by the neck's (``'TTF' + 'TTTT'``), and ``backbone.set_skip`` switches both.
"""
import contextlib
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.backbones import CSPDarknet, CSPNeXt
from mmdet.registry import MODELS

from ..layers.adaptive_depth import AdaptiveDepthMixin, adn_signature
from ..layers.csp import (check_csp_split, make_skippable, skippable_block_names, split_counts,
                          static_csp_state_dict)
from ..layers.skip import SkipLike, SkipTuple, parse_skip
from ..layers.skip_aware import collect_skip_norm_pairs


class CSPBackboneADNMixin(AdaptiveDepthMixin):
    """The ADN part of :class:`CSPNeXtADN` and :class:`CSPDarknetADN` (the upstream class,
    ``_upstream``, comes after it in the bases and builds the stages)."""

    _upstream: type

    def _init_adn(self, skip: SkipLike, num_shared_blocks, skip_aware_norms: bool) -> None:
        stages = self._csp_stages()
        self.num_shared_blocks = check_csp_split(num_shared_blocks, [m for _, m in stages],
                                                 type(self).__name__)
        counts = [len(m.blocks) for _, m in stages]
        self.skippable_stages = [
            name.split('.')[0] for (name, _), k, n in zip(stages, self.num_shared_blocks, counts)
            if k < n
        ]
        if not self.skippable_stages:
            raise ValueError(
                f'{type(self).__name__}: no stage can skip: blocks per stage {tuple(counts)} '
                f'with num_shared_blocks={self.num_shared_blocks}; a skippable stage needs '
                'at least 2 residual blocks (e.g. deepen_factor >= 0.33); use the plain '
                f'{self._upstream.__name__} for this size')
        for (name, layer), k, n in zip(stages, self.num_shared_blocks, counts):
            if k < n:
                make_skippable(layer, k, skip_aware_norms)
        self.skip_aware_norms = bool(skip_aware_norms)
        self._num_own_flags = len(self.skippable_stages)
        self.set_skip(skip)
        self._fill_skip_norms_on_load()

    def _csp_stages(self) -> List[Tuple[str, torch.nn.Module]]:
        """``('stageN.K', CSPLayer)`` of every stage (the CSPLayer is a stage's last
        module)."""
        return [(f'{name}.{len(getattr(self, name)) - 1}', getattr(self, name)[-1])
                for name in self.layers[1:]]

    def _skippable_layers(self) -> List[Tuple[str, torch.nn.Module]]:
        return [(n, m) for n, m in self._csp_stages() if n.split('.')[0] in self.skippable_stages]

    # -- depth: the backbone's flags, then a linked neck's ------------------------------
    @property
    def adn_neck(self) -> Optional[AdaptiveDepthMixin]:
        """The ADN neck whose flags follow this backbone's (see :func:`link_adn_neck`)."""
        return self.__dict__.get('_adn_neck')

    def link_neck(self, neck: Optional[AdaptiveDepthMixin]) -> None:
        """Let the depth API cover ``neck`` too (None: the backbone alone). Kept out of
        ``_modules``: the neck stays the detector's module, with its own keys."""
        self.__dict__['_adn_neck'] = neck

    @property
    def num_skippable_stages(self) -> int:
        neck = self.adn_neck
        return self._num_own_flags + (neck.num_skippable_stages if neck is not None else 0)

    @property
    def skip(self) -> SkipTuple:
        neck = self.adn_neck
        return self._skip + (tuple(neck.skip) if neck is not None else ())

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self.set_skip(value)

    def set_skip(self, skip: SkipLike):
        """Switch to another sub-network at once; with a linked neck ``skip`` has this
        backbone's letters followed by the neck's (or is 'super' / 'base')."""
        try:
            parsed = parse_skip(skip, self.num_skippable_stages)
        except ValueError as err:
            neck = self.adn_neck
            if neck is None:
                raise
            raise ValueError(f'{err} ({self._num_own_flags} for the backbone\'s stages '
                             f'{self.skippable_stages}, then {neck.num_skippable_stages} for the '
                             f'neck\'s layers {neck.skippable_layers})') from None
        own, rest = parsed[:self._num_own_flags], parsed[self._num_own_flags:]
        if own != self.__dict__.get('_skip'):
            for (_, layer), flag in zip(self._skippable_layers(), own):
                layer.blocks.set_skip_subpath(flag)
            self.__dict__['_skip'] = own
        if self.adn_neck is not None:
            self.adn_neck.set_skip(rest)
        return self

    def skip_flag_buffers(self) -> List[str]:
        """The backbone's own skip-flag buffers (a linked neck keeps its own, see
        :meth:`skip_from_tensor`)."""
        return [f'{name}.blocks.skip_flag' for name, _ in self._skippable_layers()]

    @contextlib.contextmanager
    def skip_from_tensor(self, skip: torch.Tensor):
        """Graphs read the depth from ``skip`` (a bool tensor, one flag per skippable stage
        of the backbone, then of a linked neck) instead of the flags ``set_skip`` keeps."""
        with super().skip_from_tensor(skip):  # checks skip, swaps this backbone's flags
            neck = self.adn_neck
            if neck is None:
                yield self
            else:
                with neck.skip_from_tensor(skip[self._num_own_flags:]):
                    yield self

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        return collect_skip_norm_pairs(self)

    def skippable_blocks(self) -> List[str]:
        """Names of the skippable blocks, e.g. ``['stage1.1.blocks.1', ...]``."""
        return skippable_block_names(self._skippable_layers())

    def stage_modules(self) -> List[torch.nn.Module]:
        """The skippable stages, whose outputs are the stage features distilled with
        ``features='stages'``."""
        return [getattr(self, name) for name in self.skippable_stages]

    # -- static export (mmadn.deploy) ---------------------------------------------------
    _ADN_ONLY_ARGS = ('num_shared_blocks', 'skip', 'skip_aware_norms', 'init_cfg')

    def _own_skip(self, skip: SkipLike) -> SkipTuple:
        if skip is None:
            return self._skip
        return parse_skip(skip, self.num_skippable_stages)[:self._num_own_flags]

    def static_stage_blocks(self, skip: SkipLike = None) -> Tuple[int, ...]:
        """Blocks per stage of sub-network ``skip`` (default: the active one)."""
        return split_counts([m for _, m in self._csp_stages()], self._own_skip(skip))

    def static_cfg(self, cfg: dict, skip: SkipLike = None) -> dict:
        """The config of the plain upstream backbone that computes sub-network ``skip``:
        ``arch_ovewrite`` with the blocks per stage that run (``deepen_factor=1``), every
        other upstream argument of ``cfg`` kept, the ADN ones and ``init_cfg`` dropped."""
        static = {k: v for k, v in dict(cfg).items() if k not in self._ADN_ONLY_ARGS + ('type', )}
        arch = static.pop('arch_ovewrite', None) or self.arch_settings[static.get('arch', 'P5')]
        blocks = self.static_stage_blocks(skip)
        scope = str(cfg.get('type', '')).rpartition('.')[0]
        upstream = self._upstream.__name__
        static.update(
            type=f'{scope}.{upstream}' if scope else upstream, deepen_factor=1.0,
            arch_ovewrite=[[i, o, n, identity, spp]
                           for (i, o, _, identity, spp), n in zip(arch, blocks)], init_cfg=None)
        return static

    def static_state_dict(self, skip: SkipLike = None) -> Dict[str, torch.Tensor]:
        """The weights of :meth:`static_cfg`'s backbone (keys relative to the backbone)."""
        return static_csp_state_dict(self.state_dict(), self._skippable_layers(),
                                     self._own_skip(skip))

    # -- weights ------------------------------------------------------------------------
    def init_weights(self):
        super().init_weights()
        self._copy_skip_norms_unless_pretrained()

    def own_split(self) -> Optional[str]:
        return f'num_shared_blocks={tuple(self.num_shared_blocks)}'


@MODELS.register_module()
class CSPNeXtADN(CSPBackboneADNMixin, CSPNeXt):
    """CSPNeXt (RTMDet's backbone) with skippable sub-paths and skip-aware norms.

    Takes every argument of mmdet's :class:`~mmdet.models.backbones.CSPNeXt`, in its order
    and with its defaults (``arch``, ``deepen_factor``, ``widen_factor``, ...), then these
    keyword-only ones:

    Args:
        skip (str | Sequence[bool]): the sub-network to start with: one letter per
            skippable stage (``'TTF'``), a list of bools, ``'super'`` (default) or
            ``'base'``.
        num_shared_blocks (Sequence[int], optional): shared blocks per stage, one integer
            per stage; a stage of ``n >= 2`` residual blocks takes ``1..n`` (``n``: it does
            not skip), the others their ``n``. Default: ``min(n - 1, (n + 1) // 2)`` for
            the stages that can skip.
        skip_aware_norms (bool): give the shared blocks' ConvModules ``bn_skip`` norms.
            Default True; False is the "without skip-aware BN" ablation.

    Raises:
        ValueError: if no stage can skip (every stage of one block, e.g. RTMDet-tiny's
            ``deepen_factor=0.167``).
    """

    _upstream = CSPNeXt

    def __init__(self, *args, skip: SkipLike = 'super', num_shared_blocks=None,
                 skip_aware_norms: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_adn(skip, num_shared_blocks, skip_aware_norms)


@MODELS.register_module()
class CSPDarknetADN(CSPBackboneADNMixin, CSPDarknet):
    """CSPDarknet (YOLOX's backbone) with skippable sub-paths and skip-aware norms.

    Takes every argument of mmdet's :class:`~mmdet.models.backbones.CSPDarknet`, in its
    order and with its defaults, then the keyword-only ``skip``, ``num_shared_blocks`` and
    ``skip_aware_norms`` of :class:`CSPNeXtADN`.
    """

    _upstream = CSPDarknet

    def __init__(self, *args, skip: SkipLike = 'super', num_shared_blocks=None,
                 skip_aware_norms: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_adn(skip, num_shared_blocks, skip_aware_norms)


CSPNeXtADN.__signature__ = adn_signature(CSPNeXt, CSPNeXtADN)
CSPDarknetADN.__signature__ = adn_signature(CSPDarknet, CSPDarknetADN)
