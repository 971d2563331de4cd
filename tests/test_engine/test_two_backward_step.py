"""The two-backward step on a one-parameter-vector model: real numbers, by hand."""
import torch
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from torch import nn

from mmadn.engine import TwoBackwardStep


class _Scale(BaseModel):
    """``inputs * w``; its ``loss`` is the one the step binds for each forward."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.loss(inputs, data_samples) if mode == 'loss' else inputs * self.w


def _first(model):
    # loss_a = sum(x * w), teacher = (x * w).detach()
    def first(inputs, data_samples):
        out = inputs * model.w
        return dict(loss_a=out.sum()), out.detach()

    return first


def _second(model):
    # loss_b = sum(x * w * teacher): its gradient is x * teacher = x^2 w
    def second(inputs, data_samples, teacher):
        return dict(loss_b=(inputs * model.w * teacher).sum())

    return second


def test_one_optimizer_iteration_per_step_with_gradient_accumulation():
    """accumulative_counts=2: each step counts one iteration, both backwards are scaled by
    1/2, the optimizer steps at the 2nd and 4th step with the summed gradients."""
    model = _Scale()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    optim.initialize_count_status(model, 0, 4)
    steps = []
    optim.optimizer.register_step_post_hook(lambda *_: steps.append(optim.inner_count))
    step = TwoBackwardStep(_first(model), _second(model))
    x = torch.tensor([1.0, 2.0, 3.0])
    logs, counts, ws = [], [], []
    for i in range(4):
        if i == 2:  # a loss already on the instance is back after each pass
            model.loss = 'installed'
        logs.append(step(model, dict(inputs=x), optim))
        counts.append(optim.inner_count)
        ws.append(model.w.detach().clone())
        assert model.__dict__.get('loss') == ('installed' if i >= 2 else None)
    assert counts == [1, 2, 3, 4] and steps == [2, 4]
    assert ws[0].tolist() == [1.0, 1.0, 1.0]
    # per step, grad = x + x^2 w; w = 1: [2, 6, 12] (two halves), SGD lr 0.1
    assert torch.allclose(ws[1], torch.tensor([0.8, 0.4, -0.2]), atol=1e-6)
    assert torch.equal(ws[2], ws[1])
    # w = [0.8, 0.4, -0.2]: grad [1.8, 3.6, 1.2]
    assert torch.allclose(ws[3], torch.tensor([0.62, 0.04, -0.32]), atol=1e-6)
    # the logged losses are the unscaled ones: loss_a = 6, loss_b = sum(x^2) = 14
    assert {k: v.item() for k, v in logs[0].items()} == dict(loss=20.0, loss_a=6.0, loss_b=14.0)
