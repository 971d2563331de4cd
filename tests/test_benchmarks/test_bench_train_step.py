"""The saved-tensor meter of benchmarks/bench_train_step.py, and the three step kinds it
compares on the tiny classifier."""
import gc

import bench_train_step as bts
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from ..conftest import CLS_DEMO


def test_saved_bytes_counts_distinct_storages_until_the_backward():
    x = torch.randn(1000, requires_grad=True)
    tracker = bts.SavedBytes(exclude=[x])
    with tracker.hooks():
        y = x.exp()  # saves its output y: 4000 bytes
        z = (y * y).sum() + y.sin().sum()  # y saved three more times: the same storage
        w = (x * 2.0).sum()  # mul by a scalar saves nothing; x itself is excluded
    assert tracker.peak == tracker.current == 4000
    teacher = torch.randn(500)
    tracker.hold(teacher)  # a tensor kept outside autograd: 2000 bytes more
    assert tracker.peak == 6000
    (z + w).backward()
    assert tracker.current == 2000  # the graph freed y; the held tensor stays
    del teacher
    gc.collect()
    assert tracker.current == 0 and tracker.peak == 6000 and not tracker.live


def test_two_backward_peak_saved_bytes_near_the_plain_step():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(CLS_DEMO)
    cfg.model.backbone.zero_init_residual = False
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1e-3)))
        data = dict(
            inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(4)],
            data_samples=[DataSample().set_gt_label(k % 4) for k in range(4)])
        hooks = bts.make_hooks('spatial')
        saved = {k: bts.measure_saved(k, hooks, model, optim, data, 'cpu') for k in bts.KINDS}
    one, two = saved['one_backward'] / saved['plain'], saved['two_backward'] / saved['plain']
    assert saved['plain'] > 1.0  # MiB: ResNet-18 at 64 px, 4 images
    # both graphs alive at once vs. one at a time (plus the detached teacher features)
    assert one > 1.3, saved
    assert two < 1.1, saved
    assert 'loss' not in model.__dict__ and 'train_step' not in model.__dict__
