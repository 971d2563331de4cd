"""The wheel bundle for the project's GPU machine (tools/gpu_bundle.sh) and its offline proof
(tools/gpu_bundle_selftest.sh): Python 3.12 with only the machine's packages and the bundle
runs benchmarks/gpu_check.sh --cpu-smoke and the tests of the check.

The scripts' one-line refusals are checked in every run. The bundle and the proof are slow
(the proof trains and benchmarks every part of the check on the CPU: about 4 minutes on 2
shared cores), so they run only when asked:
    MMADN_GPU_BUNDLE=DIR python -m pytest -m gpu_bundle tests/test_benchmarks/test_gpu_bundle.py
with DIR made by `bash tools/gpu_bundle.sh DIR` (and MMADN_GPU_ENV as for that script)."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from ..conftest import ROOT

BUNDLE = os.environ.get('MMADN_GPU_BUNDLE')
needs_bundle = pytest.mark.skipif(
    not BUNDLE, reason='set MMADN_GPU_BUNDLE=DIR (a bundle '
    'made by tools/gpu_bundle.sh) to run the offline Python '
    '3.12 proof')


def _refusal(args, **env):
    proc = subprocess.run(args, cwd=ROOT, env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()


@pytest.mark.parametrize('args, line', [
    ([], 'gpu_bundle: expected one argument, the output folder (got: nothing); usage: bash '
     'tools/gpu_bundle.sh OUT_DIR'),
    (['a', 'b'], 'gpu_bundle: expected one argument, the output folder (got: a b); usage: '
     'bash tools/gpu_bundle.sh OUT_DIR'),
])
def test_bundle_script_wants_one_folder(args, line):
    assert _refusal(['bash', 'tools/gpu_bundle.sh'] + args) == (2, [line])


def test_bundle_script_names_a_wrong_setting(tmp_path):
    out = str(tmp_path / 'b')
    assert _refusal(['bash', 'tools/gpu_bundle.sh', out], MMADN_BUNDLE_CUDA='yes') == (2, [
        'gpu_bundle: MMADN_BUNDLE_CUDA=yes: expected auto, 1 (CUDA ops or fail) or 0 (C++ ops '
        'only)'
    ])
    if sys.version_info[:2] != (3, 12):  # this interpreter is the wrong one
        rc, lines = _refusal(['bash', 'tools/gpu_bundle.sh', out], PYTHON312=sys.executable)
        assert rc == 2
        assert lines == [
            f'gpu_bundle: PYTHON312={sys.executable} is not CPython 3.12 '
            f'({sys.version.split()[0]}); the GPU machine runs CPython 3.12'
        ]
    assert not osp.exists(out)


def test_selftest_wants_a_bundle(tmp_path):
    missing = str(tmp_path / 'nope')
    assert _refusal(['bash', 'tools/gpu_bundle_selftest.sh', missing]) == (2, [
        f'gpu_bundle_selftest: {missing}: no such folder (make it with: bash '
        f'tools/gpu_bundle.sh {missing})'
    ])


MAX_MIB = 60


def _image_names():
    names = set()
    with open(osp.join(ROOT, 'tools', 'gpu_bundle_image.txt')) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                names.add(re.split(r'[=<>!~;]', line, 1)[0].lower().replace('_', '-'))
    return names


@pytest.mark.gpu_bundle
@needs_bundle
def test_bundle_is_small_complete_and_apart_from_the_image():
    wheels = sorted(glob.glob(osp.join(BUNDLE, '*.whl')))
    names = [osp.basename(w).split('-')[0].lower().replace('_', '-') for w in wheels]
    assert len(names) == len(set(names)), names  # one version of each
    assert {'mmcv', 'mmengine', 'mmdet', 'mmpretrain', 'pycocotools'} <= set(names)
    assert not set(names) & _image_names()  # nothing the machine already has
    assert sum(osp.getsize(w) for w in wheels) <= MAX_MIB * 2**20
    for w in wheels:  # CPython 3.12 on x86-64 Linux, or pure Python
        tags = osp.basename(w)[:-4].split('-')[-3:]
        assert tags[0] in ('py3', 'py2.py3', 'cp312'), w
        assert tags[2] == 'any' or 'x86_64' in tags[2], w
    info = dict(
        line.split('=', 1) for line in open(osp.join(BUNDLE, 'BUNDLE.txt')).read().splitlines())
    assert info['python'] == '3.12'
    assert info['torch'].split('+')[0] == [
        n.split('==')[1] for n in open(osp.join(ROOT, 'tools', 'gpu_bundle_image.txt'))
        if n.startswith('torch==')
    ][0].strip()
    assert info['mmcv_ops'] == 'cpu' or re.fullmatch(r'cuda 13\.\d+ sm_90', info['mmcv_ops'])


@pytest.mark.gpu_bundle
@needs_bundle
@pytest.mark.timeout(3600)
def test_offline_python312_runs_the_smoke_and_the_tests_of_the_check():
    proc = subprocess.run(['bash', 'tools/gpu_bundle_selftest.sh', BUNDLE], cwd=ROOT,
                          capture_output=True, text=True, timeout=3500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(
        r'\[selftest\] Python 3\.12\.\d+, torch 2\.11\.0\+\w+, CUDA available: '
        r'False', out), out[-3000:]
    assert '[gpu_check] bundle' in out  # installed by gpu_check.sh itself, offline
    assert re.search(r'\[selftest\] smoke run: exit 0 in \d+ s; tests: exit 0', out), out[-3000:]
