import math

import pytest
import torch

from mmadn.models.losses import SubPathKDLoss


def _hand_kl(student_rows, teacher_rows, temp=1.0):
    """KL(p_t || p_s) per row with plain Python math, averaged over rows, times T^2."""
    total = 0.0
    for s, t in zip(student_rows, teacher_rows):
        es = [math.exp(v / temp) for v in s]
        et = [math.exp(v / temp) for v in t]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return total / len(student_rows) * temp * temp


def test_zero_for_identical_and_positive_otherwise():
    x = torch.randn(2, 5, 3, 3)
    for mode in ('spatial', 'pooled'):
        loss = SubPathKDLoss(mode=mode)
        assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
        assert loss(x, x + torch.randn_like(x)).item() > 1e-4


def test_logits_match_hand_computation_with_temperature():
    s = [[0.1, 2.0, -1.0], [1.5, 0.0, 0.3]]
    t = [[0.5, 1.0, -0.5], [0.0, 0.2, 2.0]]
    loss = SubPathKDLoss(temperature=2.0)(torch.tensor(s), torch.tensor(t))
    assert loss.item() == pytest.approx(_hand_kl(s, t, 2.0), rel=1e-5)


def test_spatial_is_per_location_and_pooled_is_gap():
    s = torch.tensor([[[[0.0, 1.0]], [[2.0, -1.0]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]])
    spatial = SubPathKDLoss(mode='spatial')(s, t).item()
    rows_s = [[0.0, 2.0], [1.0, -1.0]]  # channels at location 0 and 1
    rows_t = [[1.0, 0.0], [0.0, 0.5]]
    assert spatial == pytest.approx(_hand_kl(rows_s, rows_t), rel=1e-5)
    pooled = SubPathKDLoss(mode='pooled')(s, t).item()
    assert pooled == pytest.approx(_hand_kl([[0.5, 0.5]], [[0.5, 0.25]]), rel=1e-5)


def test_does_not_grow_with_image_or_batch_size():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    loss = SubPathKDLoss(mode='spatial')
    small = loss(s, t)
    big = loss(s.repeat(3, 1, 4, 4), t.repeat(3, 1, 4, 4))  # 3x batch, 16x area
    assert big.item() == pytest.approx(small.item(), rel=1e-5)


def test_topk_keeps_teacher_top_entries():
    s = [[0.3, 2.0, -1.0, 0.7]]
    t = [[3.0, 0.1, 2.0, -4.0]]
    loss = SubPathKDLoss(topk=2)(torch.tensor(s), torch.tensor(t)).item()
    assert loss == pytest.approx(_hand_kl([[0.3, -1.0]], [[3.0, 2.0]]), rel=1e-5)


def test_gradient_reaches_only_the_student():
    s = torch.randn(2, 6, 4, 4, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, requires_grad=True)
    SubPathKDLoss()(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_fp32_under_autocast():
    s = torch.randn(2, 8, 4, 4).bfloat16()
    t = torch.randn(2, 8, 4, 4).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = SubPathKDLoss()(s, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(SubPathKDLoss()(s.float(), t.float()).item(), rel=1e-6)


@pytest.mark.parametrize('kwargs, msg', [(dict(mode='gap'), "mode='gap'"),
                                         (dict(temperature=0), 'temperature=0'),
                                         (dict(topk=0), 'topk=0')])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SubPathKDLoss(**kwargs)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r'student shape \(2, 3\) != teacher shape \(2, 4\)'):
        SubPathKDLoss()(torch.randn(2, 3), torch.randn(2, 4))
