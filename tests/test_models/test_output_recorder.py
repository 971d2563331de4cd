"""The forward-hook recorder of the distilled outputs."""
import torch
from torch import nn

from mmadn.models.distill import OutputRecorder


class _Pair(nn.Module):

    def forward(self, x):
        return x + 1, x + 2


def test_recorder_records_only_inside_recording_and_removes_its_hooks():
    torch.manual_seed(0)
    lin, pair, x = nn.Linear(2, 2), _Pair(), torch.ones(1, 2)
    rec = OutputRecorder()
    rec.watch('lin', lin)
    rec.watch('pair', pair)
    lin(x)  # before a recording: nothing kept
    with rec.recording() as out:
        y1, y2 = lin(x), lin(2 * x)
        pair(x)
    lin(3 * x)  # after it: nothing added
    assert out['lin'][0] is y1 and out['lin'][1] is y2 and len(out['lin']) == 2
    # a tuple output adds its items
    assert [t.tolist() for t in out['pair']] == [[[2.0, 2.0]], [[3.0, 3.0]]]
    with rec.recording() as again:  # a new recording starts empty
        pair(x)
    assert list(again) == ['pair'] and len(again['pair']) == 2
    rec.remove()
    assert not lin._forward_hooks and not pair._forward_hooks and rec.handles == []
    with rec.recording() as none:
        lin(x)
    assert none == {}
