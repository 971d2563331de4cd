"""The sub-path specialization KD loss: KL(teacher || student) between channel softmaxes."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

MODES = ('spatial', 'pooled')


@MODELS.register_module()
class SubPathKDLoss(nn.Module):
    """``KL(softmax(teacher / T) || softmax(student / T)) * T^2``, teacher detached.

    Works on stage features ``(N, C, H, W)`` and on logits ``(N, K)``. Always computed in
    fp32 (also under AMP) and averaged so that it does not grow with batch or image size.

    Args:
        mode (str): for 4-D features, ``'spatial'`` takes a softmax over channels at every
            location and averages the KL over ``N * H * W`` locations (the paper's "every
            spatial dimension"); ``'pooled'`` global-average-pools to ``(N, C)`` first (the
            authors' code). 2-D inputs (logits) are the same in both modes.
        temperature (float): softmax temperature ``T``. Default 1.0.
        topk (int, optional): keep only the teacher's ``topk`` largest entries of each row
            (the authors use the super-net's top-500 classes for ImageNet logits).
        loss_weight (float): multiplies the loss. Default 1.0.
    """

    def __init__(self, mode: str = 'spatial', temperature: float = 1.0, topk: Optional[int] = None,
                 loss_weight: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode={mode!r}: expected one of {MODES}')
        if not temperature > 0:
            raise ValueError(f'temperature={temperature!r}: expected a positive number')
        if topk is not None and (not isinstance(topk, int) or topk < 1):
            raise ValueError(f'topk={topk!r}: expected None or a positive int')
        self.mode = mode
        self.temperature = float(temperature)
        self.topk = topk
        self.loss_weight = float(loss_weight)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f'student shape {tuple(student.shape)} != teacher shape '
                             f'{tuple(teacher.shape)}')
        if student.dim() not in (2, 4):
            raise ValueError(f'expected (N, C) or (N, C, H, W) inputs, got shape '
                             f'{tuple(student.shape)}')
        with torch.autocast(device_type=student.device.type, enabled=False):
            s, t = student.float(), teacher.detach().float()
            if s.dim() == 4 and self.mode == 'pooled':
                s, t = s.mean(dim=(2, 3)), t.mean(dim=(2, 3))
            # channels are dim 1; in 'spatial' mode every (n, h, w) location is a row
            if self.topk is not None and self.topk < s.shape[1]:
                idx = t.topk(self.topk, dim=1).indices
                s, t = s.gather(1, idx), t.gather(1, idx)
            temp = self.temperature
            if temp != 1.0:
                s, t = s / temp, t / temp
            log_s, log_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)
            rows = s.numel() // s.shape[1]  # N, or N * H * W locations
            kl = F.kl_div(log_s, log_t, reduction='sum', log_target=True) / rows
            return kl * (temp * temp) * self.loss_weight

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, temperature={self.temperature}, topk={self.topk}, '
                f'loss_weight={self.loss_weight}')
