"""AtomicCheckpointHook on a real mmengine Runner: a failed write of the new best
checkpoint leaves the previous best (plain CheckpointHook removes it first)."""
import os

import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.fileio.backends import local_backend
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmadn  # noqa: F401
from mmadn.models import load_checkpoint_file


class _Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return [dict(pred=o) for o in out]


class _Rising(BaseMetric):
    """A score that improves at every validation, so every validation writes a best file."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        self.calls += 1
        return dict(score=float(self.calls))


def _runner(work_dir, hook_type):
    data = [dict(inputs=torch.randn(2), labels=torch.randn(())) for _ in range(4)]
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=_Toy(), work_dir=str(work_dir), train_dataloader=loader, val_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=1), val_cfg=dict(),
        val_evaluator=dict(type=_Rising), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type=hook_type, by_epoch=False, interval=1,
                                           max_keep_ckpts=1, save_best='score', rule='greater')),
        experiment_name=f'{hook_type}_{os.path.basename(str(work_dir))}')


@pytest.mark.parametrize('hook_type', ['AtomicCheckpointHook', 'CheckpointHook'])
def test_a_failed_best_write_keeps_the_previous_best(tmp_path, monkeypatch, hook_type):
    put = local_backend.LocalBackend.put

    def disk_full(self, obj, filepath):
        if 'best_score_iter_2.pth' in os.path.basename(str(filepath)):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(28, 'No space left on device')
        return put(self, obj, filepath)

    monkeypatch.setattr(local_backend.LocalBackend, 'put', disk_full)
    runner = _runner(tmp_path, hook_type)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    names = sorted(os.listdir(tmp_path))
    assert 'iter_2.pth' in names and 'iter_1.pth' not in names  # the periodic ones
    if hook_type == 'AtomicCheckpointHook':
        # the previous best is there and loads; the cut write left no partial file
        assert 'best_score_iter_1.pth' in names and 'best_score_iter_2.pth' not in names
        load_checkpoint_file(str(tmp_path / 'best_score_iter_1.pth'))
        assert not [n for n in names if n.startswith('.tmp-')]
        assert runner.message_hub.get_info('best_ckpt') == str(tmp_path / 'best_score_iter_1.pth')
    else:  # mmengine's order: the previous best is gone, the new one is cut short
        assert 'best_score_iter_1.pth' not in names and 'best_score_iter_2.pth' in names
