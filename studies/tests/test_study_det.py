"""The detection study: its variants differ from ``adn`` in exactly one setting, and its
quick mode end to end (1 seed, a few iterations, 16 + 8 generated images): pretraining,
the JSON, resuming from it, the Markdown report and the plot."""
import json
import os.path as osp

import pytest
import study_det

from .report_checks import assert_real_plot, assert_report_from_json_alone, md_table

VARIANTS = ['adn', 'base']
METRICS = ('coco/bbox_mAP', 'coco/segm_mAP')


def _flat(obj, prefix=''):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out or {prefix.rstrip('.'): {}}
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f'{prefix}{i}.'))
        return out or {prefix.rstrip('.'): []}
    return {prefix.rstrip('.'): obj}


def _diff(a, b):
    fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys()
                  if fa.get(k, '<absent>') != fb.get(k, '<absent>'))


def test_each_compared_variant_differs_in_exactly_one_setting():
    args = study_det.parse_args(['--quick'])
    base = study_det.det_cfg(args)
    skips = ['FFFF', 'TTTT']
    cfg = {
        v: study_det.det_variant_cfg(base, v, f'{spec["init"]}.pth', skips)
        for v, spec in study_det.DET_VARIANTS.items()
    }
    hook = 'custom_hooks.0.'
    # (a) KD only
    assert _diff(cfg['adn'], cfg['adn_no_kd']) == [
        hook + 'feat_kd', hook + 'feat_kd.mode', hook + 'feat_kd.type'
    ]
    assert cfg['adn_no_kd'].custom_hooks[0]['feat_kd'] is None
    assert cfg['adn_no_kd'].custom_hooks[0]['base_task_loss'] is True
    # (b) the KD form only: what is distilled, how, and how the levels are combined
    assert _diff(cfg['adn'], cfg['adn_stage_kd']) == [
        hook + 'feat_kd.mode', hook + 'features', hook + 'level_reduction'
    ]
    # (c) skip-aware norms only
    assert _diff(cfg['adn'], cfg['adn_no_skipbn']) == ['model.backbone.skip_aware_norms']
    # (e) the start only, then calibration only
    assert _diff(cfg['adn'], cfg['adn_plain_init']) == ['model.backbone.init_cfg.checkpoint']
    calib = _diff(cfg['adn_plain_init'], cfg['adn_plain_init_calib'])
    assert calib and all(k.startswith('custom_hooks.1.') for k in calib)
    assert cfg['adn_plain_init_calib'].custom_hooks[1]['type'] == 'SkipNormCalibrationHook'
    # (d) the baselines train without the hook, each from its own classifier
    for v, init in (('plain', 'plain.pth'), ('base', 'base.pth')):
        assert cfg[v].custom_hooks == [] and cfg[v].model.backbone.init_cfg.checkpoint == init
    assert cfg['base'].model.backbone.type == 'StageResNet'
    # the recipe under test is the demo config's
    assert cfg['adn'].custom_hooks == base.custom_hooks


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('study_det')
    out = str(tmp / 'out')
    argv = [
        '--quick', '--threads', '1', '--variants', *VARIANTS, '--skips', 'FFFF,TTTT', '--out', out,
        '--work-dir',
        str(tmp / 'work'), '--data-root',
        str(tmp / 'shapes')
    ]
    return study_det.main(argv), out, argv


def test_quick_mode_sizes():
    args = study_det.parse_args(['--quick'])
    assert (args.seeds, args.iters, args.cls_iters, args.num_train, args.num_val) == \
        ([0], 4, 4, 16, 8)


def test_json_pretraining_runs_and_coco_metrics(study):
    data, out, _ = study
    with open(osp.join(out, 'study_det.json')) as f:
        saved = json.load(f)
    assert saved['complete'] is True and saved['skips'] == ['FFFF', 'TTTT']
    # one classifier per kind the detectors start from
    assert sorted(p['kind'] for p in saved['pretrain']) == ['adn', 'base']
    pre = {p['kind']: p for p in saved['pretrain']}
    assert set(pre['adn']['top1']) == {'FFFF', 'TTTT'} and set(pre['base']['top1']) == {'static'}
    assert all(0 <= v <= 100 for p in pre.values() for v in p['top1'].values())
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


def test_a_second_call_resumes_and_other_settings_are_refused(study, capsys):
    data, out, argv = study
    again = study_det.main(argv)
    assert 'resuming' in capsys.readouterr().out
    assert again['runs'] == data['runs'] and again['pretrain'] == data['pretrain']
    with pytest.raises(SystemExit, match='other settings.*--fresh'):
        study_det.main(argv + ['--num-train', '12'])


def test_report_tables_and_plots(study):
    data, out, argv = study
    with open(osp.join(out, 'study_det.md')) as f:
        md = f.read()
    assert 'QUICK MODE' in md and '16 training and 8 test images' in md
    assert 'Precondition (bbox mAP): not measured yet' in md
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
    _, pre = md_table(md, 'seed | classifier')
    assert [r[1] for r in pre] == ['`adn`', '`base`']
    assert_real_plot(osp.join(out, 'study_det_map.png'))
    assert_report_from_json_alone(study_det.main, argv, osp.join(out, 'study_det.md'))


def test_precondition_verdicts():

    def runs(sup, naive):
        return [
            dict(variant='plain', seed=i, results={
                'FFFF': {
                    'm': a
                },
                'TTTT': {
                    'm': b
                }
            }) for i, (a, b) in enumerate(zip(sup, naive))
        ]

    holds, text = study_det.precondition(runs([0.6, 0.62], [0.2, 0.25]), 'm', 'FFFF', 'TTTT')
    assert holds is True and 'loses 0.385' in text and 'can tell variants apart' in text
    holds, text = study_det.precondition(runs([0.6, 0.5], [0.55, 0.52]), 'm', 'FFFF', 'TTTT')
    assert holds is False and 'cannot test the claims' in text
    assert study_det.precondition([], 'm', 'FFFF', 'TTTT')[0] is None
