"""The run-time depth interface shared by every ADN backbone, the checkpoint filter that
fills skip-aware norms a checkpoint lacks, and :func:`find_adn_backbone`."""
import contextlib
import inspect
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...utils.torch_compat import register_load_state_dict_pre_hook
from .skip import SkipLike, SkipTuple, enumerate_skips, format_skip, parse_skip
from .skip_aware import SKIP_SUFFIX

_NORM_STATE = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


class CheckpointMismatchError(ValueError):
    """A checkpoint that loads but does not fit the model (or the use) it is given to."""


class AdaptiveDepthMixin:
    """The run-time depth API of an ADN backbone.

    The class provides :meth:`_apply_skip` (push a normalized skip tuple into its stages),
    :meth:`skip_norm_pairs` (``(skip_name, partner_name)`` for every skip-aware norm,
    relative to the backbone) and ``num_skippable_stages``.
    """

    num_skippable_stages: int

    def _apply_skip(self, skip: SkipTuple) -> None:
        raise NotImplementedError

    def skip_norm_pairs(self) -> List[Tuple[str, str]]:
        raise NotImplementedError

    @property
    def skip(self) -> SkipTuple:
        """The active skip configuration, a tuple of ``num_skippable_stages`` bools."""
        return self._skip

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self.set_skip(value)

    @property
    def skip_str(self) -> str:
        return format_skip(self.skip)

    def set_skip(self, skip: SkipLike):
        """Switch to another sub-network at once (nothing is rebuilt or reloaded)."""
        parsed = parse_skip(skip, self.num_skippable_stages)
        if parsed != getattr(self, '_skip', None):
            self._apply_skip(parsed)
            self.__dict__['_skip'] = parsed
        return self

    @contextlib.contextmanager
    def skipping(self, skip: SkipLike):
        """``with backbone.skipping('TTTT'): ...`` runs that sub-network, then restores."""
        saved = self.skip
        self.set_skip(skip)
        try:
            yield self
        finally:
            self.set_skip(saved)

    def skip_flag_buffers(self) -> List[str]:
        """Names (relative to the backbone) of the 0-dim bool buffers, one per skippable
        stage, that compiled and exported graphs read the depth from; ``set_skip`` keeps
        them in step. A backbone without them switches its depth in eager mode only."""
        raise NotImplementedError(
            f'{type(self).__name__} keeps its depth in Python state only: compiled and '
            'exported graphs of it serve the depth they were traced at (ResNetADN keeps its '
            'skip flags as tensors, see skip_flag_buffers)')

    @contextlib.contextmanager
    def skip_from_tensor(self, skip: torch.Tensor):
        """Within the block, graphs read the depth from ``skip`` (a bool tensor of
        ``num_skippable_stages`` flags, e.g. a graph input) instead of the flags
        ``set_skip`` keeps: how an exported graph takes the depth as an input."""
        names = self.skip_flag_buffers()
        n = self.num_skippable_stages
        if not isinstance(skip, torch.Tensor) or tuple(skip.shape) != (n, ) \
                or skip.dtype != torch.bool:
            got = (f'{skip.dtype} tensor of shape {tuple(skip.shape)}' if isinstance(
                skip, torch.Tensor) else type(skip).__name__)
            raise ValueError(f'skip: a {got}; expected a bool tensor of shape ({n},), one '
                             'flag per skippable stage (True: the stage skips)')
        owners = []
        for i, name in enumerate(names):
            path, _, buf = name.rpartition('.')
            owner = self.get_submodule(path) if path else self
            owners.append((owner, buf, owner._buffers[buf]))
            owner._buffers[buf] = skip[i]
        try:
            yield self
        finally:
            for owner, buf, saved in owners:
                owner._buffers[buf] = saved

    def train(self, mode: bool = True):
        super().train(mode)  # some upstream backbones return None here
        return self

    def subnet_skips(self) -> Iterator[SkipTuple]:
        """Every sub-network's skip tuple, super-net first, base-net last."""
        return enumerate_skips(self.num_skippable_stages)

    def copy_skip_norms_from_partners(self) -> None:
        """Make every ``*_skip`` norm an exact copy of its partner (parameters and stats)."""
        modules = dict(self.named_modules())
        with torch.no_grad():
            for skip_name, partner_name in self.skip_norm_pairs():
                modules[skip_name].load_state_dict(modules[partner_name].state_dict())

    def _fill_skip_norms_on_load(self) -> None:
        """Call at the end of ``__init__``: then checkpoints without ``*_skip`` keys load,
        each skip norm a copy of its partner (see :meth:`_fill_missing_skip_norms`)."""
        register_load_state_dict_pre_hook(self, self._skip_norm_load_pre_hook)

    def _skip_norm_load_pre_hook(self, module, state_dict: Dict[str, torch.Tensor], prefix: str,
                                 *args, **kwargs) -> None:
        self._fill_missing_skip_norms(state_dict, prefix)

    def _copy_skip_norms_unless_pretrained(self) -> None:
        """For the end of ``init_weights``: after a random init each skip norm becomes a
        copy of its partner; a ``Pretrained`` init_cfg has already filled them on load."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        if not any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs):
            self.copy_skip_norms_from_partners()

    def _fill_missing_skip_norms(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> None:
        """Load-time hook: a checkpoint without any ``*_skip`` key (torchvision, mmdet or
        mmpretrain ResNet) initializes each skip norm as a copy of its partner.

        A backbone built without skip-aware norms leaves a checkpoint's skip norms out.
        A checkpoint with some skip norms but not this backbone's set (trained with another
        split into shared and skippable blocks) is refused: filling the rest would load
        norms of the wrong blocks and give wrong sub-network outputs.
        """
        pairs = self.skip_norm_pairs()
        modules = {k[len(prefix):].rpartition('.')[0] for k in state_dict if k.startswith(prefix)}
        in_ckpt = {m for m in modules if m.rpartition('.')[2].endswith(SKIP_SUFFIX)}
        if in_ckpt and not pairs:
            # skip-aware norms switched off here: one norm set serves every depth, so the
            # checkpoint's skip norms have no module to go to and are left out
            dropped = [
                k for k in list(state_dict)
                if k.startswith(prefix) and k[len(prefix):].rpartition('.')[0] in in_ckpt
            ]
            for k in dropped:
                del state_dict[k]
            print_log(
                f'{type(self).__name__}: built without skip-aware norms; the checkpoint\'s '
                f'{len(in_ckpt)} skip norms ({sorted(in_ckpt)[0]}, ...) are not loaded and '
                'every depth uses the shared norms.', logger='current')
            return
        if in_ckpt:
            own = {s for s, _ in pairs}
            # a partial state dict (some modules only) needs only its modules' skip norms
            missing = sorted({s for s, p in pairs if p in modules} - in_ckpt)
            extra = sorted(in_ckpt - own)
            if missing or extra:
                raise CheckpointMismatchError(
                    self._split_mismatch(sorted(in_ckpt), missing, extra, prefix))
            return
        copied = []
        for skip_name, partner_name in pairs:
            skip_key, partner_key = prefix + skip_name, prefix + partner_name
            if partner_name not in modules:
                continue
            for field in _NORM_STATE:
                if partner_key + '.' + field in state_dict:
                    state_dict[skip_key + '.' + field] = state_dict[partner_key + '.' + field]
            copied.append(skip_name)
        if copied:
            print_log(
                f'{type(self).__name__}: the checkpoint has no skip-aware norms; '
                f'{len(copied)} of them ({copied[0]}, ...) start as copies of their '
                'partners (e.g. bn1_skip <- bn1).', logger='current')

    def split_of_skip_norms(self, skip_norms: List[str]) -> Optional[str]:
        """The split (e.g. ``'num_shared_blocks=(1, 2, 3, 1)'``) that the given skip-norm
        module names imply, for messages; None where a backbone cannot tell."""
        return None

    def own_split(self) -> Optional[str]:
        """This backbone's split, in the form of :meth:`split_of_skip_norms`."""
        return None

    def _split_mismatch(self, in_ckpt: List[str], missing: List[str], extra: List[str],
                        prefix: str) -> str:
        where = f' (prefix {prefix!r})' if prefix else ''
        theirs, ours = self.split_of_skip_norms(in_ckpt), self.own_split()
        if theirs and ours:
            split = (f'it was trained with {theirs}, this {type(self).__name__} has {ours}; '
                     f'build the backbone with {theirs} (e.g. --cfg-options '
                     f"model.backbone.{theirs.replace(' ', '')}) or load a checkpoint of "
                     'this split')
        else:
            split = ('it was trained with another split into shared and skippable blocks; '
                     'build the backbone with the split of the checkpoint')
        detail = []
        if missing:
            detail.append(f'{len(missing)} skip norms of this backbone are missing, e.g. '
                          f'{missing[0]}')
        if extra:
            detail.append(f'{len(extra)} are not in this backbone, e.g. {extra[0]}')
        return (f'{type(self).__name__}: the checkpoint{where} holds skip-aware norms for '
                f'other blocks than this backbone ({"; ".join(detail)}): {split}. (Only a '
                'checkpoint without any *_skip norm gets them filled from their partners.)')


def adn_signature(upstream: type, adn_mixin: type) -> inspect.Signature:
    """The signature of an ADN class whose ``__init__`` (that of ``adn_mixin``) passes the
    upstream arguments through: the parameters of ``upstream`` (order, defaults), then the
    keyword-only ADN ones. Assigned to the class's ``__signature__`` for ``inspect`` and
    ``help``."""
    params = list(inspect.signature(upstream).parameters.values())
    adn = [
        p for p in inspect.signature(adn_mixin.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    cut = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    return inspect.Signature(params[:cut] + adn + params[cut:])


def find_adn_backbone(model: torch.nn.Module, required: bool = True,
                      user: Optional[str] = None) -> Optional[AdaptiveDepthMixin]:
    """The ADN backbone of a detector / classifier (unwrapped from a model wrapper such as
    DDP), or the model itself if it is an ADN backbone.

    Args:
        model: the model, its wrapper, or a backbone.
        required: raise if there is none (default); else return None.
        user: who needs it, named at the start of the error (e.g. a hook's class name).

    Raises:
        TypeError: without an ADN backbone (with ``required``).
    """
    model = model.module if is_model_wrapper(model) else model
    if isinstance(model, AdaptiveDepthMixin):
        return model
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, AdaptiveDepthMixin):
        return backbone
    if not required:
        return None
    who = f'{user} needs a model with an ADN backbone: ' if user else ''
    raise TypeError(
        f'{who}{type(model).__name__} has no ADN backbone (its backbone is '
        f'{type(backbone).__name__}); sub-networks exist only for ADN backbones such as '
        "dict(type='ResNetADN', ...)")
