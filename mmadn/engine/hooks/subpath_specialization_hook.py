"""Turns any mmdet detector or mmpretrain classifier with an ADN backbone into an
adaptive-depth trainer (the paper's Algorithm 1), without changing the model's class.

One iteration trains two sub-networks on the same batch:

1. the super-net (``backbone.skip = 'super'``): the task losses as usual, while forward
   hooks record the stage features (and a classifier's logits): the detached teacher;
2. the base-net (``'base'``): ``extract_feat`` (+ the classifier head), or the full task
   loss with ``base_task_loss=True`` (the detection recipe of the authors' co-author);
3. ``alpha * task_super + (1 - alpha) * (KD_feat + KD_logits [+ task_base])``.

Two ways to run it, both with one optimizer step and the same gradients:

- ``two_backward=True`` (default, the authors' order): the hook owns the model's
  ``train_step``. The super-net loss is backpropagated (under DDP's ``no_sync``) before the
  base-net runs, so the super-net's autograd graph is freed before the base-net's is built;
  then the base-net loss is backpropagated and the runner's ``OptimWrapper`` steps. Both
  backwards go through the ``OptimWrapper`` (gradient-accumulation loss scaling, AMP loss
  scaling); its iteration counter advances once per step.
- ``two_backward=False``: the model's ``loss`` runs both passes inside one ``forward`` and the
  summed loss is backpropagated once; both graphs are alive at that backward.

Everything is attached as instance attributes, so checkpoints keep their plain keys.
"""
import contextlib
import functools
from typing import Dict, List, Optional, Sequence, Set, Union

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS, MODELS
from torch.nn.parallel import DistributedDataParallel

from ...models.layers.skip import check_skip_form, format_skip, skips_as_tuples
from ...models.layers import AdaptiveDepthMixin

FEATURE_SOURCES = ('stages', 'backbone', 'neck')
LEVEL_REDUCTIONS = ('sum', 'mean', 'random')


def _scale(value, factor: float):
    if isinstance(value, (list, tuple)):
        return [v * factor for v in value]
    return value * factor


def _as_list(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _forward(model, data, mode: str = 'loss'):
    """``model(**data, mode=mode)`` as mmengine's ``train_step`` calls it."""
    if isinstance(data, dict):
        return model(**data, mode=mode)
    if isinstance(data, (list, tuple)):
        return model(*data, mode=mode)
    raise TypeError(f'the data preprocessor returned a {type(data).__name__}; expected a '
                    f'dict, list or tuple')


def _detached(losses: dict) -> dict:
    return {k: [t.detach() for t in v] if isinstance(v, (list, tuple)) else v.detach()
            for k, v in losses.items()}


def _leaves_reached(loss: torch.Tensor) -> Set[int]:
    """``id`` of every leaf tensor (parameter) whose gradient ``loss.backward()`` would
    accumulate."""
    found, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, 'variable', None)  # an AccumulateGrad node
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def _reach_every_parameter(losses: Dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Add ``0 * p.sum()`` to the first loss in ``losses`` for every trainable parameter of
    ``module`` that the losses do not reach.

    Added inside DDP's forward, the term makes DDP see those parameters as used: with
    ``find_unused_parameters=False`` it would otherwise wait for their gradients forever,
    and torch 2.1's DDP with ``find_unused_parameters=True`` would leave their gradients
    (from the ``no_sync`` backward) rank-local.
    """
    keys = [k for k in losses if 'loss' in k]
    tensors = [t for k in keys for t in _as_list(losses[k])]
    if not tensors:
        return
    reached = _leaves_reached(sum(tensors))
    unreached = [p for p in module.parameters() if p.requires_grad and id(p) not in reached]
    if not unreached:
        return
    zero = sum((p.sum() * 0.0 for p in unreached), tensors[0].new_zeros(()))
    first = losses[keys[0]]
    losses[keys[0]] = [first[0] + zero, *first[1:]] if isinstance(first, (list, tuple)) \
        else first + zero


class _Recorder:
    """Forward hooks that store module outputs while a recording is open."""

    def __init__(self):
        self.handles = []
        self.sink: Optional[Dict[str, list]] = None

    def watch(self, key: str, module: torch.nn.Module) -> None:

        def hook(_module, _inputs, output):
            if self.sink is not None:
                self.sink.setdefault(key, []).extend(_as_list(output))

        self.handles.append(module.register_forward_hook(hook))

    @contextlib.contextmanager
    def recording(self):
        self.sink = {}
        try:
            yield self.sink
        finally:
            self.sink = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


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


@HOOKS.register_module()
class SubPathSpecializationHook(Hook):
    """Sub-path specialization training (super-net + base-net on every batch).

    Args:
        alpha (float): weight of the super-net task loss; the KD terms (and the base-net
            task loss) get ``1 - alpha``. Default 0.5.
        features (str): which features are distilled: ``'stages'`` (the output of every
            backbone stage, default), ``'backbone'`` (the backbone's outputs, i.e. what the
            neck/FPN consumes) or ``'neck'`` (the FPN outputs).
        feat_kd (dict, optional): config of the feature KD loss, ``None`` to turn it off.
            Default ``dict(type='SubPathKDLoss', mode='spatial')``; ``mode='pooled'`` is the
            authors' code.
        level_reduction (str): how the KD terms of several feature maps (stages, or FPN
            levels) are combined: ``'sum'`` (default), ``'mean'`` (the authors' detection
            code) or ``'random'`` (one level, drawn uniformly per batch).
        logit_kd (dict, optional): config of the logit KD loss for classifiers (models with
            a ``head``), ``None`` to turn it off; ``topk=500`` as the authors do on ImageNet.
        base_task_loss (bool): also compute the task loss of the base-net (weighted by
            ``1 - alpha``, logged with a ``base_`` prefix). Default False.
        kd_warmup_iters (int): the KD weight ramps linearly from 0 to ``1 - alpha`` over
            the first iterations. Default 0.
        super_skip / base_skip: the two sub-networks trained. Defaults 'super' / 'base'.
        two_backward (bool): backpropagate the super-net loss before the base-net runs
            (two backwards, one optimizer step, the same gradients as one backward of the
            summed loss). ResNet-50 classifier, 224 px, batch 8, CPU
            (``benchmarks/bench_train_step.py``): the tensors saved for backward peak at
            1.00x those of a plain step instead of 1.81x, and the step costs 1.71x a plain
            step instead of 1.84x, hence the default True. False runs both passes in one
            ``forward`` and backpropagates once (for a model whose own ``train_step`` must
            be kept).
    """

    def __init__(self,
                 alpha: float = 0.5,
                 features: str = 'stages',
                 feat_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='spatial'),
                 logit_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='pooled'),
                 level_reduction: str = 'sum',
                 base_task_loss: bool = False,
                 kd_warmup_iters: int = 0,
                 super_skip: Union[str, Sequence[bool]] = 'super',
                 base_skip: Union[str, Sequence[bool]] = 'base',
                 two_backward: bool = True):
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
        if not isinstance(two_backward, bool):
            raise ValueError(f'two_backward={two_backward!r}: expected True or False')
        self.alpha = float(alpha)
        self.features = features
        self.feat_kd = MODELS.build(feat_kd) if feat_kd else None
        self.logit_kd = MODELS.build(logit_kd) if logit_kd else None
        self.level_reduction = level_reduction
        self.base_task_loss = base_task_loss
        self.kd_warmup_iters = kd_warmup_iters
        self.super_skip = super_skip
        self.base_skip = base_skip
        self.two_backward = two_backward
        self._iter = 0
        self._recorder = _Recorder()
        self._model = None
        self._wrapper = None
        self._pass = 'both'  # what the installed `loss` runs: 'both', 'super' or 'base'
        self._teacher: Optional[Dict[str, list]] = None

    # -- installation ---------------------------------------------------------------------
    def before_train(self, runner) -> None:
        self.install(runner.model)

    def after_train(self, runner) -> None:
        self.uninstall()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter = runner.iter

    def install(self, model: torch.nn.Module) -> None:
        """Make ``model.loss`` run the sub-path specialization passes and, with
        ``two_backward``, ``model.train_step`` the two-backward step.

        ``model`` is the model or its model wrapper (e.g. ``MMDistributedDataParallel``,
        whose ``train_step`` is the one the runner calls).
        """
        wrapper = model
        model = model.module if is_model_wrapper(model) else model
        backbone = getattr(model, 'backbone', None)
        if not isinstance(backbone, AdaptiveDepthMixin):
            raise TypeError(
                f'SubPathSpecializationHook needs a model whose `backbone` is an ADN backbone '
                f'(e.g. ResNetADN); got {type(model).__name__} with backbone '
                f'{type(backbone).__name__}')
        # validate the two skips now rather than at the first iteration
        with backbone.skipping(self.super_skip), backbone.skipping(self.base_skip):
            pass
        self.uninstall()
        rec = self._recorder
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
        self._use_logits = self.logit_kd is not None and hasattr(model, 'head')
        if self.logit_kd is not None and not self._use_logits:
            print_log('SubPathSpecializationHook: the model has no classification `head`; '
                      'logit KD is off', logger='current')
        if self._use_logits:
            rec.watch('logits', model.head)
        if self.feat_kd is None and not self._use_logits and not self.base_task_loss:
            rec.remove()
            raise ValueError('SubPathSpecializationHook: with feat_kd=None, no logit KD and '
                             'base_task_loss=False nothing trains the base-net; enable one')
        orig_loss = model.loss
        self._model = model

        def adn_loss(inputs, data_samples):
            return self._loss(model, orig_loss, inputs, data_samples)

        model.loss = adn_loss
        if self.two_backward:
            self._wrapper = wrapper
            wrapper.train_step = functools.partial(self.two_backward_train_step, wrapper)

    def uninstall(self) -> None:
        self._recorder.remove()
        if self._model is not None and 'loss' in self._model.__dict__:
            del self._model.__dict__['loss']
        if self._wrapper is not None and 'train_step' in self._wrapper.__dict__:
            del self._wrapper.__dict__['train_step']
        self._model = self._wrapper = None
        self._pass, self._teacher = 'both', None

    # -- the passes -----------------------------------------------------------------------
    def kd_weight(self) -> float:
        ramp = 1.0 if self.kd_warmup_iters == 0 else min(1.0, self._iter / self.kd_warmup_iters)
        return (1.0 - self.alpha) * ramp

    def _loss(self, model, orig_loss, inputs, data_samples) -> Dict[str, torch.Tensor]:
        """The installed ``model.loss``: both passes, or the one the step asks for."""
        if self._pass == 'super':
            losses, self._teacher = self._super_pass(model, orig_loss, inputs, data_samples)
            return losses
        if self._pass == 'base':
            teacher, self._teacher = self._teacher, None
            losses = self._base_pass(model, orig_loss, inputs, data_samples, teacher)
            if isinstance(self._wrapper, DistributedDataParallel):
                _reach_every_parameter(losses, model)
            return losses
        losses, teacher = self._super_pass(model, orig_loss, inputs, data_samples)
        losses.update(self._base_pass(model, orig_loss, inputs, data_samples, teacher))
        return losses

    def _super_pass(self, model, orig_loss, inputs, data_samples):
        """The super-net's task losses (weighted by ``alpha``) and its recorded outputs,
        detached (the teacher)."""
        with model.backbone.skipping(self.super_skip), self._recorder.recording() as rec:
            losses_super = orig_loss(inputs, data_samples)
        teacher = {k: [t.detach() for t in v] for k, v in rec.items()}
        losses = {k: _scale(v, self.alpha) if 'loss' in k else v
                  for k, v in losses_super.items()}
        return losses, teacher

    def _base_pass(self, model, orig_loss, inputs, data_samples,
                   teacher) -> Dict[str, torch.Tensor]:
        """The base-net's part of the loss: its task losses with ``base_task_loss`` and the
        KD terms against the teacher."""
        with model.backbone.skipping(self.base_skip), self._recorder.recording() as student:
            if self.base_task_loss:
                losses_base = orig_loss(inputs, data_samples)
            else:  # run only as far as the distilled outputs
                losses_base = {}
                if self._use_logits or self.features == 'neck':
                    feats = model.extract_feat(inputs)
                    if self._use_logits:
                        model.head(feats)
                else:
                    model.backbone(inputs)
        losses = {f'base_{k}': _scale(v, 1.0 - self.alpha) if 'loss' in k else v
                  for k, v in losses_base.items()}
        losses.update(self._kd_losses(teacher, student, data_samples))
        return losses

    def _kd_losses(self, teacher, student, data_samples) -> Dict[str, torch.Tensor]:
        losses = {}
        w = self.kd_weight()
        if self.feat_kd is not None:
            keys = sorted(k for k in teacher if k.startswith('feat'))
            pairs = [(s, t) for k in keys for s, t in zip(student[k], teacher[k])]
            losses['loss_kd_feat'] = w * self._reduce_levels(pairs)
        if self._use_logits:
            t_logits, s_logits = teacher['logits'][-1], student['logits'][-1]
            losses['loss_kd_logits'] = w * self.logit_kd(s_logits, t_logits)
            losses.update(self._accuracies(t_logits, s_logits, data_samples))
        return losses

    def _reduce_levels(self, pairs) -> torch.Tensor:
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

    # -- the two-backward step ------------------------------------------------------------
    def two_backward_train_step(self, wrapper, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """``train_step`` of ``wrapper`` (the model or its DDP wrapper): super-net forward +
        backward, base-net forward + backward, one ``optim_wrapper`` update.

        The first backward runs under ``no_sync``: DDP all-reduces the summed gradients
        once, at the second. Under DDP the base-net loss also holds a zero term of every
        parameter it does not reach (skipped blocks, heads the base pass does not run; see
        :func:`_reach_every_parameter`), so that DDP all-reduces their first-backward
        gradients too.
        """
        if not isinstance(optim_wrapper, OptimWrapper) or \
                isinstance(optim_wrapper, OptimWrapperDict):
            raise TypeError(f'two_backward=True needs one OptimWrapper; got '
                            f'{type(optim_wrapper).__name__} (use two_backward=False)')
        model = self._model
        no_sync = getattr(wrapper, 'no_sync', contextlib.nullcontext)
        try:
            with no_sync():
                with optim_wrapper.optim_context(wrapper):
                    data = model.data_preprocessor(data, True)
                    self._pass = 'super'
                    losses = _forward(wrapper, data)
                logged = _detached(losses)
                loss, _ = model.parse_losses(losses)
                self._backward_uncounted(optim_wrapper, loss)
                del loss, losses  # the super-net graph goes; the detached teacher stays
            with optim_wrapper.optim_context(wrapper):
                self._pass = 'base'
                losses = _forward(wrapper, data)
            logged.update(_detached(losses))
            loss, _ = model.parse_losses(losses)
            optim_wrapper.update_params(loss)
        finally:
            self._pass, self._teacher = 'both', None
        # logged as the one-backward step logs them
        return model.parse_losses(logged)[1]

    @staticmethod
    def _backward_uncounted(optim_wrapper: OptimWrapper, loss: torch.Tensor) -> None:
        """``optim_wrapper.backward`` of the loss scaled for gradient accumulation, as in
        ``update_params``, but without counting an iteration: the step's second backward,
        through ``update_params``, counts it and decides whether to step."""
        count = optim_wrapper._inner_count
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
        optim_wrapper._inner_count = count
