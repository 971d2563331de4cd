"""The classification study end to end in a tiny mode (1 seed, 2 iterations): the digits
data, the JSON, the Markdown report and the plots it writes."""
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
import study_cls
import torch

from mmadn.analysis import count_flops
from mmadn.models.backbones import ResNetADN
from .report_checks import assert_real_plot, assert_report_from_json_alone, md_table

VARIANTS = ['adn', 'adn_no_skipbn', 'plain', 'base']


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('study_cls')
    out = str(tmp / 'out')
    argv = [
        '--quick', '--threads', '1', '--iters', '2', '--variants', *VARIANTS, '--skips', 'TTFF',
        '--out', out, '--work-dir',
        str(tmp / 'work'), '--data-root',
        str(tmp / 'digits')
    ]
    data = study_cls.main(argv)
    return data, out, argv, str(tmp / 'digits')


def test_digits_split_and_reuse(study):
    _, _, _, root = study
    root = osp.join(root, '32px')
    counts = {
        split: sum(len(os.listdir(osp.join(root, split, str(c)))) for c in range(10))
        for split in ('train', 'test')
    }
    assert counts == dict(train=1347, test=450)  # all 1797 digits, stratified 75/25
    import cv2
    img = cv2.imread(
        osp.join(root, 'test', '0',
                 sorted(os.listdir(osp.join(root, 'test', '0')))[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 32) and img.dtype == np.uint8 and img.max() > 100
    marker = osp.join(root, study_cls.DIGITS_META)
    before = os.stat(marker).st_mtime_ns
    assert study_cls.ensure_digits(osp.dirname(root), 32) == root
    assert os.stat(marker).st_mtime_ns == before  # reused, not regenerated


def test_json_has_every_run_with_real_metrics(study):
    data, out, _, _ = study
    with open(osp.join(out, 'study_cls.json')) as f:
        saved = json.load(f)
    assert saved['complete'] is True and saved['runs'] == json.loads(json.dumps(data['runs']))
    runs = {r['variant']: r for r in saved['runs']}
    assert list(runs) == VARIANTS and all(r['seed'] == 0 for r in runs.values())
    for v in VARIANTS[:-1]:
        assert list(runs[v]['results']) == ['FFFF', 'TTFF', 'TTTT']
    assert list(runs['base']['results']) == ['static']
    for r in runs.values():
        for metrics in r['results'].values():
            assert 0.0 <= metrics['accuracy/top1'] <= 100.0
        assert r['cpu_s'] > 0 and r['train_s'] > 0 and r['test_s'] > 0
    assert 0 < saved['cpu_s'] and 0 < saved['wall_s']
    # skip-norm distances: only for ADN with skip-aware norms; the first norm of stage 1
    # sees the stem output, identical in the super-net and base-net passes
    assert 'bn' not in runs['adn_no_skipbn'] and 'bn' not in runs['plain']
    bn = runs['adn']['bn']
    assert [r['name'] for r in bn] == [f'layer{s}.0.bn{i}' for s in range(1, 5) for i in (1, 2)]
    assert bn[0]['first'] and bn[0]['distance'] == pytest.approx(0.0, abs=1e-6)
    assert all(r['distance'] >= 0 and np.isfinite(r['distance']) for r in bn)
    assert max(r['distance'] for r in bn) > 0  # two iterations already move them apart


def test_flops_are_the_backbone_counts(study):
    data = study[0]
    assert data['stage_blocks'] == [2, 2, 2, 2] and data['num_shared_blocks'] == [1, 1, 1, 1]
    net = ResNetADN(depth=18, base_channels=16, stem_channels=16).eval()
    x = torch.zeros(1, 3, 32, 32)
    for skip in ('FFFF', 'TTFF', 'TTTT'):
        with net.skipping(skip):
            assert data['mflops'][skip] == pytest.approx(count_flops(net, x) / 1e6)
    assert data['mflops']['FFFF'] > data['mflops']['TTFF'] > data['mflops']['TTTT']


def test_report_tables_and_plots(study):
    data, out, argv, _ = study
    with open(osp.join(out, 'study_cls.md')) as f:
        md = f.read()
    assert 'QUICK MODE' in md
    runs = {r['variant']: r['results'] for r in data['runs']}
    header, rows = md_table(md, 'variant | what | top-1 % super-net (FFFF)')
    assert [r[0] for r in rows] == [f'`{v}`' for v in VARIANTS]
    for row in rows:
        v = row[0].strip('`')
        if v == 'base':
            assert row[2] == 'n/a'
            assert row[3] == f"{runs[v]['static']['accuracy/top1']:.1f}"
        else:
            assert row[2:4] == [f"{runs[v][s]['accuracy/top1']:.1f}" for s in ('FFFF', 'TTTT')]
    # every tested sub-network, one row each, one column per variant except the base net
    header, rows = md_table(md, 'skip | backbone MFLOPs')
    assert header.count('`') == 2 * 3
    assert [r[0] for r in rows] == ['`FFFF`', '`TTFF`', '`TTTT`']
    for r in rows:
        assert all(0.0 <= float(c) <= 100.0 for c in r[2:])
    _, checks = md_table(md, 'claim')
    assert len(checks) == 3 + 2  # naive skipping, super, base-depth; 2 rows w/o skip-aware BN
    assert all(re.search(r'\*\*(holds|does not hold)\*\*', r[4]) for r in checks)
    _, per_seed = md_table(md, 'seed | variant')
    assert len(per_seed) == 4
    for name in ('study_cls_subnets.png', 'study_cls_bn.png'):
        assert_real_plot(osp.join(out, name))
    assert_report_from_json_alone(study_cls.main, argv, osp.join(out, 'study_cls.md'))


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match=r"\['resnet'\]"):
        study_cls.parse_args(['--variants', 'adn', 'resnet'])
