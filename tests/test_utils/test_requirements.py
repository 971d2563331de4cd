"""install_requires holds ranges; both tested stacks (the pins files) lie within them."""
import os.path as osp

import pytest
from packaging.requirements import Requirement

from ..conftest import ROOT


def _read(name):
    reqs = {}
    with open(osp.join(ROOT, 'requirements', name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                req = Requirement(line)
                reqs.setdefault(req.name, []).append(req.specifier)
    return reqs


def test_declared_requirements_are_ranges_not_pins():
    for name in ('runtime.txt', 'build.txt'):
        for pkg, specs in _read(name).items():
            assert not any(s.operator == '==' for spec in specs for s in spec), (name, pkg)
    runtime = _read('runtime.txt')
    for pkg in ('mmengine', 'mmdet', 'mmpretrain'):
        (spec, ) = runtime[pkg]
        assert {s.operator for s in spec} == {'>=', '<'}, pkg


@pytest.mark.parametrize('pins', ['pins.txt', 'pins-oldest.txt'])
def test_pinned_stacks_satisfy_the_declared_ranges(pins):
    declared = {**_read('build.txt'), **_read('runtime.txt')}
    pinned = _read(pins)
    for pkg in ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmpretrain'):
        (spec, ) = pinned[pkg]
        (exact, ) = [s.version for s in spec if s.operator == '==']
        assert all(exact in s for s in declared[pkg]), (pins, pkg, exact)


def test_lint_runs_the_same_tools_in_ci_and_in_pre_commit():
    import re
    tests = _read('tests.txt')
    with open(osp.join(ROOT, '.pre-commit-config.yaml')) as f:
        hooks = dict(
            re.findall(r'github.com/\S+/(ruff-pre-commit|isort|yapf)\s+rev:\s*v?(\S+)', f.read()))
    assert set(hooks) == {'ruff-pre-commit', 'isort', 'yapf'}
    for hook, package in (('ruff-pre-commit', 'ruff'), ('isort', 'isort'), ('yapf', 'yapf')):
        (spec, ) = tests[package]
        assert [s.version for s in spec if s.operator == '=='] == [hooks[hook]], package
    with open(osp.join(ROOT, '.ci', 'run')) as f:
        assert 'bash tools/lint.sh\n' in f.read()
