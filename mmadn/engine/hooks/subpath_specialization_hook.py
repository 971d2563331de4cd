"""Installs the sub-path specialization training (the paper's Algorithm 1) on any mmdet
detector or mmpretrain classifier with an ADN backbone, without changing its class."""
import functools
from typing import Optional, Sequence, Union

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.distill import SubPathDistiller
from ..two_backward_step import TwoBackwardStep


@HOOKS.register_module()
class SubPathSpecializationHook(Hook):
    """Sub-path specialization training (super-net + base-net on every batch).

    Every argument but ``two_backward`` is :class:`~mmadn.models.distill.SubPathDistiller`'s
    (built as ``self.distiller``, the loss); the KD warm-up follows the runner's iteration.
    The model's ``loss`` (and ``train_step``) are replaced on the instance for the training
    only, so checkpoints keep their plain keys.

    Args:
        two_backward (bool): True (default, the authors' order): ``train_step`` (the DDP
            wrapper's under DDP) becomes a :class:`~mmadn.engine.TwoBackwardStep`, which
            backpropagates the super-net loss before the base-net runs: one autograd graph
            alive at a time, one optimizer step, the gradients of one backward of the sum
            (up to float rounding). False: ``loss`` runs both passes in one ``forward``, one
            backward (for a model whose own ``train_step`` must be kept).
            ``benchmarks/bench_train_step.py`` measures both (figures in the README).
    """

    needs_adn_backbone = True  # a static export of the model drops it

    def __init__(self, alpha: float = 0.5, features: str = 'stages',
                 feat_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='spatial'),
                 logit_kd: Optional[dict] = dict(type='SubPathKDLoss', mode='pooled'),
                 level_reduction: str = 'sum', base_task_loss: bool = False,
                 kd_warmup_iters: int = 0, super_skip: Union[str, Sequence[bool]] = 'super',
                 base_skip: Union[str, Sequence[bool]] = 'base', two_backward: bool = True):
        self.distiller = SubPathDistiller(alpha=alpha, features=features, feat_kd=feat_kd,
                                          logit_kd=logit_kd, level_reduction=level_reduction,
                                          base_task_loss=base_task_loss,
                                          kd_warmup_iters=kd_warmup_iters, super_skip=super_skip,
                                          base_skip=base_skip)
        if not isinstance(two_backward, bool):
            raise ValueError(f'two_backward={two_backward!r}: expected True or False')
        self.two_backward = two_backward
        self.cur_iter = 0  # the runner's iteration, for the KD warm-up
        self._model = self._wrapper = None

    def before_train(self, runner) -> None:
        self.install(runner.model)

    def after_train(self, runner) -> None:
        self.uninstall()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.cur_iter = runner.iter

    def install(self, model: torch.nn.Module) -> None:
        """Make ``model.loss`` the distiller's loss around the model's own and, with
        ``two_backward``, ``model.train_step`` the two-backward step.

        ``model`` is the model or its model wrapper (e.g. ``MMDistributedDataParallel``,
        whose ``train_step`` is the one the runner calls).
        """
        wrapper = model
        model = model.module if is_model_wrapper(model) else model
        self.uninstall()
        d, loss_fn = self.distiller, model.loss
        d.attach(model)

        def loss(inputs, samples):
            return d.loss(loss_fn, inputs, samples, self.cur_iter)

        def base_pass(inputs, samples, teacher):
            return d.base_pass(loss_fn, inputs, samples, teacher, self.cur_iter)

        model.loss, self._model = loss, model
        if self.two_backward:
            step = TwoBackwardStep(functools.partial(d.super_pass, loss_fn), base_pass)
            wrapper.train_step = functools.partial(step, wrapper)
            self._wrapper = wrapper

    def uninstall(self) -> None:
        self.distiller.detach()
        if self._model is not None and 'loss' in self._model.__dict__:
            del self._model.__dict__['loss']
        if self._wrapper is not None and 'train_step' in self._wrapper.__dict__:
            del self._wrapper.__dict__['train_step']
        self._model = self._wrapper = None
