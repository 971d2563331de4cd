"""tools/analysis_tools/calibrate_skip_norms.py on a demo detector checkpoint."""
import os.path as osp

import pytest
import torch

from ..conftest import DET_DEMO, det_overrides, run_tool
from ..test_deploy.conftest import save_tiny_checkpoint

TOOL = 'tools/analysis_tools/calibrate_skip_norms.py'


def test_calibrated_checkpoint_changes_only_the_skip_norm_statistics(det_data_root, tmp_path):
    ckpt = save_tiny_checkpoint(DET_DEMO, str(tmp_path / 'det.pth'))
    out = str(tmp_path / 'calibrated' / 'det.pth')
    proc = run_tool([
        'python', TOOL, DET_DEMO, ckpt, '--out', out, '--num-batches', '3', '--cfg-options',
        *det_overrides(det_data_root)
    ])
    assert 'calibrated 8 skip norms' in proc.stdout
    before = torch.load(ckpt)['state_dict']
    saved = torch.load(out)
    after = saved['state_dict']
    assert set(before) == set(after)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all('_skip.' in k for k in changed)
    assert all(
        k.rsplit('.', 1)[1] in ('running_mean', 'running_var', 'num_batches_tracked')
        for k in changed)
    assert after['backbone.layer3.0.bn2_skip.num_batches_tracked'].item() == 3
    assert saved['meta']['skip_norm_calibration']['num_batches'] == 3
    assert saved['meta']['dataset_meta']['classes'][0] == 'circle'  # meta kept


@pytest.mark.parametrize('args, message', [
    (['--num-batches', '0'], '--num-batches 0: expected an integer >= 1'),
    (['--skips', 'TTXF'], "'TTXF'"),
])
def test_bad_arguments_get_one_line(det_data_root, tmp_path, args, message):
    ckpt = save_tiny_checkpoint(DET_DEMO, str(tmp_path / 'det.pth'))
    import subprocess
    import sys

    from ..conftest import ROOT
    proc = subprocess.run([
        sys.executable, TOOL, DET_DEMO, ckpt, '--out',
        str(tmp_path / 'o.pth'), *args, '--cfg-options', *det_overrides(det_data_root)
    ], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr and 'Traceback' not in proc.stderr
    assert not osp.exists(str(tmp_path / 'o.pth'))
