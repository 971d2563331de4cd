"""The detection study end to end in its quick mode (1 seed, 4 iterations, 16 + 8
generated images): the JSON, the Markdown report and the plots it writes."""
import json
import os.path as osp

import pytest

import study_det

from .report_checks import (assert_real_plot, assert_report_from_json_alone,
                            md_table)

VARIANTS = ['adn', 'base']
METRICS = ('coco/bbox_mAP', 'coco/segm_mAP')


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('study_det')
    out = str(tmp / 'out')
    argv = ['--quick', '--threads', '1', '--variants', *VARIANTS, '--skips', 'FFFF,TTTT',
            '--out', out,
            '--work-dir', str(tmp / 'work'), '--data-root', str(tmp / 'shapes')]
    return study_det.main(argv), out, argv


def test_quick_mode_sizes():
    args = study_det.parse_args(['--quick'])
    assert (args.seeds, args.iters, args.num_train, args.num_val) == ([0], 4, 16, 8)


def test_json_runs_and_coco_metrics(study):
    data, out, _ = study
    with open(osp.join(out, 'study_det.json')) as f:
        saved = json.load(f)
    assert saved['complete'] is True and saved['skips'] == ['FFFF', 'TTTT']
    runs = {r['variant']: r for r in saved['runs']}
    assert list(runs) == VARIANTS
    assert list(runs['adn']['results']) == ['FFFF', 'TTTT']
    assert list(runs['base']['results']) == ['static']
    for r in runs.values():
        for metrics in r['results'].values():
            # pycocotools' summary: every mAP in [0, 1] (-1: no ground truth of that size)
            for key in METRICS:
                assert -1.0 <= metrics[key] <= 1.0
        assert r['cpu_s'] > 0
    bn = runs['adn']['bn']
    assert len(bn) == 8 and bn[0]['name'] == 'layer1.0.bn1'
    assert bn[0]['distance'] == pytest.approx(0.0, abs=1e-6)  # same stem output
    assert max(r['distance'] for r in bn) > 0


def test_report_tables_and_plots(study):
    data, out, argv = study
    with open(osp.join(out, 'study_det.md')) as f:
        md = f.read()
    assert 'QUICK MODE' in md and '16 training and 8 test images' in md
    runs = {r['variant']: r['results'] for r in data['runs']}
    _, rows = md_table(md, 'variant | what | bbox mAP super-net (FFFF)')
    assert [r[0] for r in rows] == ['`adn`', '`base`']
    adn = rows[0]
    assert adn[2:6] == [f"{runs['adn'][s][k]:.3f}" for k in METRICS for s in ('FFFF', 'TTTT')]
    assert rows[1][2] == 'n/a' and rows[1][3] == f"{runs['base']['static'][METRICS[0]]:.3f}"
    for label in ('bbox mAP', 'segm mAP'):
        _, sub = md_table(md, f'skip | `adn` {label}')
        assert [r[0] for r in sub] == ['`FFFF`', '`TTTT`']
    _, checks = md_table(md, 'claim')
    assert len(checks) == 1  # adn base-net vs base-depth network, in the bbox table first
    for name in ('study_det_map.png', 'study_det_bn.png'):
        assert_real_plot(osp.join(out, name))
    assert_report_from_json_alone(study_det.main, argv, osp.join(out, 'study_det.md'))
