"""benchmarks/gpu_check.{sh,py} where no GPU is: the one-line refusals, the bundle checks of
the shell script, parts stopped at their time limit, the budget, and mmcv's ops probe. The
same tests run in the offline Python 3.12 proof (tools/gpu_bundle_selftest.sh) with the
wheel bundle on PYTHONPATH, so every subprocess here keeps the caller's PYTHONPATH."""
import json
import os
import os.path as osp
import subprocess
import sys
import time

import gpu_check
import pytest
import torch

from ..conftest import ROOT

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU')


def _env(**extra):
    path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    return dict(os.environ, PYTHON=sys.executable, PYTHONPATH=path, **extra)


def _run(args, timeout=120):
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()


@no_cuda
@pytest.mark.parametrize(
    'cmd', [['bash', 'benchmarks/gpu_check.sh'], [sys.executable, 'benchmarks/gpu_check.py']])
def test_gpu_check_refuses_without_cuda(tmp_path, cmd):
    out = str(tmp_path / 'gpu_check')
    args = cmd + ([out] if cmd[0] == 'bash' else ['--out', out])
    rc, lines = _run(args)
    assert rc == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith('gpu_check: no CUDA device is available here')
    assert not os.path.exists(out)  # nothing ran


def test_missing_bundle_is_one_line(tmp_path):
    rc, lines = _run([
        'bash', 'benchmarks/gpu_check.sh', '--bundle',
        str(tmp_path / 'nope'), '--cpu-smoke', '--out',
        str(tmp_path / 'out')
    ])
    assert rc == 2
    assert lines == [
        f'gpu_check: --bundle {tmp_path}/nope: no wheel bundle there (expected '
        "the *.whl and BUNDLE.txt that 'bash tools/gpu_bundle.sh "
        f"{tmp_path}/nope' writes; on the device machine name it in carry)"
    ]
    assert not (tmp_path / 'out').exists()


def test_bundle_for_another_python_is_one_line(tmp_path):
    bundle = tmp_path / 'bundle'
    bundle.mkdir()
    (bundle / 'BUNDLE.txt').write_text('python=3.9\ntorch=2.11.0+cu130\nmmcv_ops=cpu\n')
    (bundle / 'addict-2.4.0-py3-none-any.whl').write_bytes(b'')
    have = '%d.%d' % sys.version_info[:2]
    rc, lines = _run([
        'bash', 'benchmarks/gpu_check.sh', '--bundle',
        str(bundle), '--cpu-smoke', '--out',
        str(tmp_path / 'out')
    ])
    assert rc == 2
    assert lines == [
        f'gpu_check: --bundle {bundle} holds wheels for Python 3.9, but '
        f'{sys.executable} is Python {have}; run it with a Python 3.9 (PYTHON=...)'
    ]
    assert not (tmp_path / 'out').exists()


def test_site_with_foreign_files_is_left_alone(tmp_path):
    """--site is emptied before the install: a folder holding files of something else is
    refused, and kept."""
    bundle, site = tmp_path / 'bundle', tmp_path / 'site'
    bundle.mkdir()
    site.mkdir()
    (bundle / 'BUNDLE.txt').write_text('python=%d.%d\n' % sys.version_info[:2])
    (bundle / 'addict-2.4.0-py3-none-any.whl').write_bytes(b'')
    (site / 'notes.txt').write_text('mine')
    rc, lines = _run([
        'bash', 'benchmarks/gpu_check.sh', '--bundle',
        str(bundle), '--site',
        str(site), '--cpu-smoke', '--out',
        str(tmp_path / 'out')
    ])
    assert rc == 2
    assert lines == [
        f'gpu_check: --site {site} holds files this script did not install (no '
        '.mmadn-gpu-site in it); give a new or empty folder'
    ]
    assert (site / 'notes.txt').read_text() == 'mine'


def test_bundle_option_without_folder_is_one_line():
    rc, lines = _run(['bash', 'benchmarks/gpu_check.sh', '--cpu-smoke', '--bundle'])
    assert rc == 2
    assert lines == ['gpu_check: --bundle needs a folder (e.g. --bundle .gpu_bundle)']


def test_bad_budget_names_the_value():
    rc, lines = _run([sys.executable, 'benchmarks/gpu_check.py', '--cpu-smoke', '--budget', '-3'])
    assert rc == 2
    assert lines[-1].endswith("argument --budget: '-3': expected a positive number of "
                              'seconds')


def test_a_part_is_stopped_at_its_limit_with_its_children(tmp_path):
    """run() kills the part's whole process group (torchrun's workers, a build's
    compilers), not only the process it started."""
    pid_file = tmp_path / 'child.pid'
    code = ('import subprocess, sys, time; '
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f'open({str(pid_file)!r}, "w").write(str(c.pid)); time.sleep(60)')
    t0 = time.perf_counter()
    status, seconds, tail = gpu_check.run(['-c', code], timeout=3,
                                          log_path=str(tmp_path / 'part.log'))
    assert status == 'timed out'
    assert 3 <= seconds < 20 and time.perf_counter() - t0 < 20
    assert tail.startswith('stopped at its time limit of 3 s')
    child = int(pid_file.read_text())
    for _ in range(50):  # the killed child is reaped by init shortly after
        if not os.path.exists(f'/proc/{child}') or \
                open(f'/proc/{child}/stat').read().split()[2] == 'Z':
            break
        time.sleep(0.1)
    else:
        pytest.fail(f'the part\'s child {child} still runs')
    assert (tmp_path / 'part.log').exists()


def test_budget_spent_starts_no_part(tmp_path):
    """With less than MIN_START seconds of budget no part starts; the JSON and the table
    still say what happened to each part."""
    out, work = tmp_path / 'out', tmp_path / 'runs'
    rc, lines = _run([
        sys.executable, 'benchmarks/gpu_check.py', '--cpu-smoke', '--budget', '5', '--out',
        str(out), '--work-dir',
        str(work)
    ])
    assert rc == 1
    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['budget_s'] == 5
    assert list(report['parts']) == [p[0] for p in gpu_check.PARTS]
    for part in report['parts'].values():
        assert part['status'] == 'not started'
        assert part['reason'].endswith('s left of the 5 s budget')
    table = (out / 'gpu_check.md').read_text()
    assert '| data | 5 s left of the 5 s budget |  | not started |' in table
    assert lines[-1] == f'written: {out}/gpu_check.json and gpu_check.md beside it'


def test_probe_ops_runs_mmcv_nms_and_roi_align_on_cpu(tmp_path):
    """The probe that gates the detector parts, here on the CPU (mmcv's C++ ops)."""
    out = tmp_path / 'probe.json'
    rc, lines = _run([
        sys.executable, 'benchmarks/gpu_check.py', '--part', 'probe_ops', '--device', 'cpu',
        '--json',
        str(out)
    ])
    assert rc == 0, lines
    result = json.loads(out.read_text())
    assert result['status'] == 'ok'
    assert result['nms_keep'] == [0, 2]
    # RoIAlign (aligned: the box shifts by -0.5 px) of the ramp 8 * y + x over the box
    # (0, 0)-(4, 4): 2x2 bins of 2x2 samples at x, y in {0, 1} and {2, 3}, e.g. the first
    # bin averages 0, 1, 8, 9 (torchvision's roi_align gives the same)
    assert result['roi_align'] == pytest.approx([4.5, 6.5, 20.5, 22.5], abs=1e-5)


def test_compile_part_row_sums_up_the_benchmark_json():
    # the classifier part of the compile benchmark's saved run, as gpu_check reads it
    with open(osp.join(ROOT, 'benchmarks', 'results', 'bench_compile.json')) as f:
        saved = json.load(f)
    cls = [part for part in saved['results'] if part['part'] == 'cls']
    row = gpu_check.figures('bench_compile', dict(figures=dict(results=cls)))
    ratios = [r['ratio'] for r in cls[0]['rows']]
    assert row == (f'1 graph(s) for 16 depths, 0 eager fallback(s), 0 graph(s) after the '
                   f"warm-up; first call {cls[0]['rows'][0]['first_call_s']:.1f} s; compiled / "
                   f'eager {min(ratios):.2f}-{max(ratios):.2f}')
