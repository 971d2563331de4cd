"""benchmarks/gpu_check.sh on a machine without CUDA: one line, a non-zero exit code."""
import os
import subprocess
import sys

import pytest
import torch

from ..conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU')
@pytest.mark.parametrize(
    'cmd', [['bash', 'benchmarks/gpu_check.sh'], [sys.executable, 'benchmarks/gpu_check.py']])
def test_gpu_check_refuses_without_cuda(tmp_path, cmd):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT)
    out = str(tmp_path / 'gpu_check')
    args = cmd + ([out] if cmd[0] == 'bash' else ['--out', out])
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('gpu_check: no CUDA device is available here')
    assert not os.path.exists(out)  # nothing ran
