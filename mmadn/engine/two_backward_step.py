"""A ``train_step`` with two forward passes, two backwards and one optimizer update."""
import contextlib
from typing import Callable, Dict, Set

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch.nn.parallel import DistributedDataParallel


def _forward(model, data):
    """``model(**data, mode='loss')`` as mmengine's ``train_step`` calls it."""
    if isinstance(data, dict):
        return model(**data, mode='loss')
    if isinstance(data, (list, tuple)):
        return model(*data, mode='loss')
    raise TypeError(f'the data preprocessor returned a {type(data).__name__}; expected a '
                    f'dict, list or tuple')


def _detached(losses: dict) -> dict:
    return {
        k: [t.detach() for t in v] if isinstance(v, (list, tuple)) else v.detach()
        for k, v in losses.items()
    }


@contextlib.contextmanager
def _loss_bound(model: torch.nn.Module, loss: Callable):
    """``model.loss`` is ``loss`` inside the context; the instance's previous ``loss``
    attribute (if any) is restored after it."""
    saved = model.__dict__.get('loss')
    model.loss = loss
    try:
        yield
    finally:
        if saved is None:
            del model.__dict__['loss']
        else:
            model.loss = saved


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
    tensors = [
        t for k in keys
        for t in (losses[k] if isinstance(losses[k], (list, tuple)) else [losses[k]])
    ]
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


class TwoBackwardStep:
    """``train_step(wrapper, data, optim_wrapper)`` of a model or its model wrapper: the
    first pass's forward + backward, the second's, one update of ``optim_wrapper``: the
    gradients of one backward of the summed losses (up to float rounding), the first graph
    freed before the second is built.

    Args:
        first: ``first(inputs, data_samples) -> (losses, carry)``, the model's ``loss`` in
            the first forward; ``carry`` (e.g. detached teacher features) goes to ``second``.
        second: ``second(inputs, data_samples, carry) -> losses``, the second's ``loss``.

    Each pass runs through the wrapper's own forward, so DDP's hooks see it. The first
    backward runs under ``no_sync``: DDP all-reduces the summed gradients once, at the
    second, whose losses under DDP also hold a zero term of every parameter they do not
    reach (:func:`_reach_every_parameter`). Both backwards go through ``optim_wrapper``
    (accumulation and AMP loss scaling); its count advances once per step.
    """

    def __init__(self, first: Callable, second: Callable):
        self.first, self.second = first, second

    def __call__(self, wrapper, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        if not isinstance(optim_wrapper, OptimWrapper) or \
                isinstance(optim_wrapper, OptimWrapperDict):
            raise TypeError(f'two_backward=True needs one OptimWrapper; got '
                            f'{type(optim_wrapper).__name__} (use two_backward=False)')
        model = wrapper.module if is_model_wrapper(wrapper) else wrapper
        carry = []

        def first_loss(inputs, data_samples):
            losses, kept = self.first(inputs, data_samples)
            carry.append(kept)
            return losses

        def second_loss(inputs, data_samples):
            losses = self.second(inputs, data_samples, carry.pop())
            if isinstance(wrapper, DistributedDataParallel):
                _reach_every_parameter(losses, model)
            return losses

        with getattr(wrapper, 'no_sync', contextlib.nullcontext)():
            with optim_wrapper.optim_context(wrapper), _loss_bound(model, first_loss):
                data = model.data_preprocessor(data, True)
                losses = _forward(wrapper, data)
            logged = _detached(losses)
            loss, _ = model.parse_losses(losses)
            self._backward_uncounted(optim_wrapper, loss)
            del loss, losses  # the first graph goes; the carry stays
        with optim_wrapper.optim_context(wrapper), _loss_bound(model, second_loss):
            losses = _forward(wrapper, data)
        logged.update(_detached(losses))
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)
        # logged as a one-backward step logs them
        return model.parse_losses(logged)[1]

    @staticmethod
    def _backward_uncounted(optim_wrapper: OptimWrapper, loss: torch.Tensor) -> None:
        """``optim_wrapper.backward`` of the loss scaled for gradient accumulation, as in
        ``update_params``, but without counting an iteration: the second backward, through
        ``update_params``, counts it and decides whether to step.

        mmengine has no public way to do this: ``backward`` always increments the private
        ``_inner_count`` (read through the public ``inner_count``; there is no setter), and
        ``initialize_count_status`` sets the count only together with the maximum count
        (private ``_max_counts``), walking the model and logging its warnings at each call.
        So the count is restored here, the one place that touches it.
        """
        count = optim_wrapper.inner_count
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
        optim_wrapper._inner_count = count
