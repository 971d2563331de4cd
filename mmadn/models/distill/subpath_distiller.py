"""The sub-path specialization loss (the paper's Algorithm 1) of a model with an ADN
backbone: the super-net's task losses, the base-net's KD against the super-net's detached
outputs (and, optionally, the base-net's task losses)."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.registry import MODELS

from ..layers import find_adn_backbone
from ..layers.skip import check_skip_form, format_skip, skips_as_tuples
from .recorder import OutputRecorder

FEATURE_SOURCES = ('stages', 'backbone', 'neck')
LEVEL_REDUCTIONS = ('sum', 'mean', 'random')
Losses = Dict[str, Union[torch.Tensor, List[torch.Tensor]]]
Teacher = Dict[str, List[torch.Tensor]]


def _scale(value, factor: float):
    return [v * factor for v in value] if isinstance(value, (list, tuple)) else value * factor


def check_trained_skips(super_skip, base_skip) -> None:
    """The two trained sub-networks must parse, and the base-net must skip strictly more
    than the super-net: every stage the super-net skips, and at least one more (the KD
    teaches the smaller network from the larger; with equal ones it is 0)."""
    forms = (check_skip_form(super_skip, 'SubPathSpecializationHook super_skip'),
             check_skip_form(base_skip, 'SubPathSpecializationHook base_skip'))
    sup, base = skips_as_tuples(*forms)
    shown = f'super_skip={super_skip!r}, base_skip={base_skip!r}'
    less = [i + 1 for i, (s, b) in enumerate(zip(sup, base)) if s and not b]
    if less:
        raise ValueError(
            f'SubPathSpecializationHook {shown}: the base-net runs stage(s) {less} that the '
            'super-net skips; the base-net must skip every stage the super-net skips and '
            f"at least one more (e.g. super_skip='{format_skip(sup)}', base_skip='base')")
    if sup == base:
        raise ValueError(
            f'SubPathSpecializationHook {shown}: both are the same sub-network, so the KD '
            'is 0 and nothing trains the base-net from the super-net; the base-net must '
            "skip strictly more (e.g. super_skip='super', base_skip='base')")


class SubPathDistiller:
    """The ADN loss of the model it is attached to, around the model's own ``loss``
    (``loss_fn``): :meth:`super_pass` then :meth:`base_pass`, or both in :meth:`loss`.
    Its messages name ``SubPathSpecializationHook``, whose arguments these are.

    Args:
        alpha (float): weight of the super-net task loss; the KD terms (and the base-net
            task loss) get ``1 - alpha``. Default 0.5.
        features (str): which features are distilled: ``'stages'`` (the output of every
            backbone stage, default), ``'backbone'`` (the backbone's outputs, i.e. what the
            neck/FPN consumes) or ``'neck'`` (the FPN outputs).
        feat_kd (dict, optional): config of the feature KD loss, ``None`` to turn it off.
            Default ``dict(type='SubPathKDLoss', mode='spatial')``; ``mode='pooled'`` is the
            authors' code. A dict without ``type`` sets arguments of ``SubPathKDLoss``.
        logit_kd (dict, optional): config of the logit KD loss for classifiers (models with
            a ``head``), ``None`` to turn it off; ``topk=500`` as the authors do on ImageNet.
        level_reduction (str): how the KD terms of several feature maps (stages, or FPN
            levels) are combined: ``'sum'`` (default), ``'mean'`` (the authors' detection
            code) or ``'random'`` (one level, drawn uniformly per batch).
        base_task_loss (bool): also compute the task loss of the base-net (weighted by
            ``1 - alpha``, logged with a ``base_`` prefix). Default False.
        kd_warmup_iters (int): the KD weight ramps linearly from 0 to ``1 - alpha`` over
            the first iterations. Default 0.
        super_skip / base_skip: the two sub-networks trained. Defaults 'super' / 'base'.
    """

    def __init__(self, alpha: float = 0.5, features: str = 'stages',
                 feat_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='spatial'),
                 logit_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='pooled'),
                 level_reduction: str = 'sum', base_task_loss: bool = False,
                 kd_warmup_iters: int = 0, super_skip: Union[str, Sequence[bool]] = 'super',
                 base_skip: Union[str, Sequence[bool]] = 'base'):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha={alpha!r} ({type(alpha).__name__}): expected a number '
                             'in [0, 1], e.g. alpha=0.5')
        check_trained_skips(super_skip, base_skip)
        if features not in FEATURE_SOURCES:
            raise ValueError(f'features={features!r}: expected one of {FEATURE_SOURCES}')
        if level_reduction not in LEVEL_REDUCTIONS:
            raise ValueError(f'level_reduction={level_reduction!r}: expected one of '
                             f'{LEVEL_REDUCTIONS}')
        if not isinstance(kd_warmup_iters, int) or kd_warmup_iters < 0:
            raise ValueError(f'kd_warmup_iters={kd_warmup_iters!r}: expected an int >= 0')
        self.alpha = float(alpha)
        self.features = features
        # a dict without a type (e.g. --cfg-options ...feat_kd.mode=pooled on the default)
        # changes the default loss's settings
        self.feat_kd = MODELS.build(
            dict(type='SubPathKDLoss', **feat_kd) if 'type' not in
            feat_kd else feat_kd) if feat_kd else None
        self.logit_kd = MODELS.build(
            dict(type='SubPathKDLoss', mode='pooled', **logit_kd) if 'type' not in
            logit_kd else logit_kd) if logit_kd else None
        self.level_reduction = level_reduction
        self.base_task_loss = base_task_loss
        self.kd_warmup_iters = kd_warmup_iters
        self.super_skip = super_skip
        self.base_skip = base_skip
        self.recorder = OutputRecorder()
        self.model: Optional[torch.nn.Module] = None
        self.use_logits = False

    def attach(self, model: torch.nn.Module) -> None:
        """Watch the distilled outputs of ``model`` (not a model wrapper); raises if its
        backbone is not an ADN backbone or if nothing would train the base-net."""
        backbone = find_adn_backbone(model, user='SubPathSpecializationHook')
        # validate the two skips now rather than at the first iteration
        with backbone.skipping(self.super_skip), backbone.skipping(self.base_skip):
            pass
        self.detach()
        rec = self.recorder
        if self.feat_kd is not None:
            if self.features == 'stages':
                for i, stage in enumerate(backbone.stage_modules()):
                    rec.watch(f'feat{i}', stage)
            elif self.features == 'backbone':
                rec.watch('feat', backbone)
            else:
                if getattr(model, 'neck', None) is None:
                    raise ValueError("features='neck' but the model has no neck")
                rec.watch('feat', model.neck)
        self.use_logits = self.logit_kd is not None and hasattr(model, 'head')
        if self.logit_kd is not None and not self.use_logits:
            print_log(
                'SubPathSpecializationHook: the model has no classification `head`; '
                'logit KD is off', logger='current')
        if self.use_logits:
            rec.watch('logits', model.head)
        if self.feat_kd is None and not self.use_logits and not self.base_task_loss:
            rec.remove()
            raise ValueError('SubPathSpecializationHook: with feat_kd=None, no logit KD and '
                             'base_task_loss=False nothing trains the base-net; enable one')
        self.model = model

    def detach(self) -> None:
        self.recorder.remove()
        self.model = None

    def kd_weight(self, cur_iter: int) -> float:
        """The KD terms' weight at iteration ``cur_iter``."""
        ramp = 1.0 if self.kd_warmup_iters == 0 else min(1.0, cur_iter / self.kd_warmup_iters)
        return (1.0 - self.alpha) * ramp

    def loss(self, loss_fn: Callable, inputs, data_samples, cur_iter: int = 0) -> Losses:
        """Both passes in one forward (one backward of the sum trains both)."""
        losses, teacher = self.super_pass(loss_fn, inputs, data_samples)
        losses.update(self.base_pass(loss_fn, inputs, data_samples, teacher, cur_iter))
        return losses

    def super_pass(self, loss_fn: Callable, inputs, data_samples) -> Tuple[Losses, Teacher]:
        """The super-net's task losses (weighted by ``alpha``) and its recorded outputs,
        detached (the teacher)."""
        with self.model.backbone.skipping(self.super_skip), \
                self.recorder.recording() as rec:
            losses_super = loss_fn(inputs, data_samples)
        teacher = {k: [t.detach() for t in v] for k, v in rec.items()}
        losses = {k: _scale(v, self.alpha) if 'loss' in k else v for k, v in losses_super.items()}
        return losses, teacher

    def base_pass(self, loss_fn: Callable, inputs, data_samples, teacher: Teacher,
                  cur_iter: int = 0) -> Losses:
        """The base-net's part of the loss: its task losses with ``base_task_loss`` and the
        KD terms against ``teacher``, weighted by :meth:`kd_weight` of ``cur_iter``."""
        model = self.model
        with model.backbone.skipping(self.base_skip), self.recorder.recording() as student:
            if self.base_task_loss:
                losses_base = loss_fn(inputs, data_samples)
            else:  # run only as far as the distilled outputs
                losses_base = {}
                if self.use_logits or self.features == 'neck':
                    feats = model.extract_feat(inputs)
                    if self.use_logits:
                        model.head(feats)
                else:
                    model.backbone(inputs)
        losses = {
            f'base_{k}': _scale(v, 1.0 - self.alpha) if 'loss' in k else v
            for k, v in losses_base.items()
        }
        w = self.kd_weight(cur_iter)
        if self.feat_kd is not None:
            keys = sorted(k for k in teacher if k.startswith('feat'))
            pairs = [(s, t) for k in keys for s, t in zip(student[k], teacher[k])]
            losses['loss_kd_feat'] = w * self.reduce_levels(pairs)
        if self.use_logits:
            t_logits, s_logits = teacher['logits'][-1], student['logits'][-1]
            losses['loss_kd_logits'] = w * self.logit_kd(s_logits, t_logits)
            losses.update(self._accuracies(t_logits, s_logits, data_samples))
        return losses

    def reduce_levels(self, pairs) -> torch.Tensor:
        """The feature KD over ``(student, teacher)`` pairs, combined by
        ``level_reduction``."""
        if self.level_reduction == 'random':
            # one level per batch; torch's generator, so a seeded run draws the same levels
            idx = int(torch.randint(len(pairs), (1, )).item())
            return self.feat_kd(*pairs[idx])
        total = sum(self.feat_kd(s, t) for s, t in pairs)
        return total / len(pairs) if self.level_reduction == 'mean' else total

    @staticmethod
    def _accuracies(t_logits, s_logits, data_samples) -> Dict[str, torch.Tensor]:
        labels = [getattr(ds, 'gt_label', None) for ds in data_samples or []]
        if not labels or any(lb is None or lb.numel() != 1 for lb in labels):
            return {}
        target = torch.cat([lb.view(1) for lb in labels]).to(t_logits.device)
        with torch.no_grad():
            return {
                'acc_super': (t_logits.argmax(1) == target).float().mean() * 100,
                'acc_base': (s_logits.argmax(1) == target).float().mean() * 100,
            }
