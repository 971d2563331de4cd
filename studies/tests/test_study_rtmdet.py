"""The RTMDet-ADN study: what each variant changes against ``adn``, the precondition and
the verdicts on given numbers, and its quick mode end to end (the JSON, resuming, the
report and the plot)."""
import json
import os.path as osp

import pytest
import study_rtmdet as st

from .report_checks import assert_real_plot, assert_report_from_json_alone, md_table
from .test_study_det import _diff


def test_variants_change_only_what_they_say():
    base = st.demo_cfg(st.parse_args(['--quick']))
    cfg = {v: st.variant_cfg(base, v) for v in st.VARIANTS}
    skips = 'FFF,FFT,FTF,FTT,TFF,TFT,TTF,TTT'
    assert cfg['adn'].test_cfg.skips == skips
    assert cfg['adn'].custom_hooks == base.custom_hooks  # the demo config's recipe
    # naive skipping: the same network trained normally (no hook, no skip-aware norms)
    assert _diff(cfg['adn'], cfg['plain']) == [
        'custom_hooks', 'custom_hooks.0.alpha', 'custom_hooks.0.base_task_loss',
        'custom_hooks.0.feat_kd.mode', 'custom_hooks.0.feat_kd.type', 'custom_hooks.0.features',
        'custom_hooks.0.level_reduction', 'custom_hooks.0.type', 'model.backbone.skip_aware_norms'
    ]
    # the skippable neck: the neck's type only (and every tested depth has its 4 flags)
    assert [k for k in _diff(cfg['adn'], cfg['adn_neck']) if k != 'test_cfg.skips'] == \
        ['model.neck.type']
    neck_skips = cfg['adn_neck'].test_cfg.skips.split(',')
    assert neck_skips == [s + 'FFFF'
                          for s in skips.split(',')] + [s + 'TTTT' for s in skips.split(',')]
    # the base-depth network: mmdet's CSPNeXt with the base-net's blocks, trained normally
    bb = cfg['base'].model.backbone
    assert bb.type == 'CSPNeXt' and [row[2] for row in bb.arch_ovewrite] == [1, 2, 2, 2]
    assert cfg['base'].custom_hooks == [] and cfg['base'].test_cfg.type == 'TestLoop'


def _runs(plain_s, plain_b, adn_s=0.30, adn_b=0.29, base_b=0.25):
    runs = [
        dict(variant='plain', seed=i, base_skip='TTT', results={
            'FFF': {
                st.METRIC: s
            },
            'TTT': {
                st.METRIC: b
            }
        }) for i, (s, b) in enumerate(zip(plain_s, plain_b))
    ]
    runs.append(
        dict(variant='adn', seed=0, base_skip='TTT', results={
            'FFF': {
                st.METRIC: adn_s
            },
            'TTT': {
                st.METRIC: adn_b
            }
        }))
    runs.append(
        dict(variant='base', seed=0, base_skip='TTT', results={'static': {
            st.METRIC: base_b
        }}))
    return runs


def test_precondition_and_verdicts():
    # naive skipping loses 0.10 against a noise (std of 2 seeds) of 0.014: holds
    runs = _runs([0.30, 0.32], [0.20, 0.22])
    assert st.noise(runs, 'FFF', 'TTT') == pytest.approx(0.01414, abs=1e-4)
    holds, text = st.precondition(runs, 'FFF', 'TTT')
    assert holds is True and 'loses 0.100 bbox mAP (0.310 -> 0.210' in text
    rows, n = st.verdicts(runs, 'FFF', 'TTT')
    verdict = {r[0]: r[4] for r in rows}
    assert verdict['ADN base-net beats naive skipping of the plain network'] == '**holds**'
    assert verdict['ADN base-net beats the individually trained base-depth network'] == \
        '**holds**'
    assert verdict['ADN super-net matches the plain network'] == '**holds** (within noise)'
    assert all(v == 'not measured' for k, v in verdict.items() if k.startswith('skippable'))
    # the same drop against a noise of 0.057: does not hold, and no verdict is established
    runs = _runs([0.25, 0.33], [0.15, 0.23])
    holds, text = st.precondition(runs, 'FFF', 'TTT')
    assert holds is False and 'not more than twice the noise' in text
    rows, _ = st.verdicts(runs, 'FFF', 'TTT')
    assert {
        r[0]: r[4]
        for r in rows
    }['ADN base-net beats the individually trained base-depth '
      'network'] == '**does not hold** (within noise)'


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('study_rtmdet')
    out = str(tmp / 'out')
    argv = [
        '--quick', '--threads', '1', '--runs', 'plain:0', 'adn_neck:0', '--out', out, '--work-dir',
        str(tmp / 'work'), '--data-root',
        str(tmp / 'shapes')
    ]
    return st.main(argv), out, argv


def test_quick_run_json_report_and_resume(study, capsys):
    data, out, argv = study
    with open(osp.join(out, 'study_rtmdet.json')) as f:
        saved = json.load(f)
    assert saved['complete'] is True and saved['base_skip'] == 'TTT'
    runs = {r['variant']: r for r in saved['runs']}
    assert list(runs) == ['plain', 'adn_neck']
    assert len(runs['adn_neck']['results']) in (0, 16)  # CocoMetric gives none without boxes
    g = saved['gflops']
    # backbone + neck GFLOPs at 640 px: skipping lowers them, the neck's flags too
    assert g['plain']['640']['TTT'] < g['plain']['640']['FFF']
    assert g['adn_neck']['640']['TTTTTTT'] < g['adn_neck']['640']['TTTFFFF'] < \
        g['adn_neck']['640']['FFFFFFF']
    assert g['adn_neck']['640']['FFFFFFF'] == pytest.approx(g['plain']['640']['FFF'])
    assert g['plain']['96']['FFF'] == pytest.approx(g['plain']['640']['FFF'] * (96 / 640)**2,
                                                    rel=0.02)
    with open(osp.join(out, 'study_rtmdet.md')) as f:
        md = f.read()
    assert 'QUICK MODE' in md and '16 training and 8 test images' in md
    _, rows = md_table(md, 'variant | sub-network')
    gflops = {(r[0], r[1]): float(r[3]) for r in rows}
    for (v, skip), value in gflops.items():
        assert value == pytest.approx(g[v.strip('`')]['640'][skip.strip('`')], abs=5e-4)
    assert_real_plot(osp.join(out, 'study_rtmdet_map.png'))
    assert_report_from_json_alone(st.main, argv, osp.join(out, 'study_rtmdet.md'))
    again = st.main(argv)
    assert 'resuming' in capsys.readouterr().out and again['runs'] == data['runs']
    with pytest.raises(SystemExit, match='other settings'):
        st.main(argv + ['--num-train', '12'])


def test_readme_table_is_the_saved_study():
    """The README's RTMDet study table and its precondition figures come from the JSON."""
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    with open(osp.join(root, 'studies', 'results', 'study_rtmdet.json')) as f:
        data = json.load(f)
    with open(osp.join(root, 'README.md')) as f:
        readme = f.read()
    lines = readme.split('<!-- rtmdet-study -->\n')[1].splitlines()[2:6]
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
    runs, g = data['runs'], data['gflops']

    def cell(variant, skip):
        vals = st.sc.values(runs, variant, skip, st.METRIC)
        return st.sc.fmt_ms(vals, 3)

    assert rows[0][1:3] == [cell('plain', 'FFF'), cell('plain', 'TTT')]
    assert rows[1][1:3] == [cell('adn', 'FFF'), cell('adn', 'TTT')]
    assert rows[2][2] == cell('base', 'TTT')
    assert rows[3][1:3] == [cell('adn_neck', 'FFFFFFF'), cell('adn_neck', 'TTTTTTT')]
    assert rows[0][3] == f"{g['plain']['640']['FFF']:.3f} / {g['plain']['640']['TTT']:.3f}"
    assert rows[2][3] == f"{g['base']['640']['static']:.3f}"
    assert rows[3][3] == (f"{g['adn_neck']['640']['FFFFFFF']:.3f} / "
                          f"{g['adn_neck']['640']['TTTTTTT']:.3f}")
    holds, text = st.precondition(runs, 'FFF', 'TTT')
    assert holds is False
    assert 'loses 0.020 bbox mAP (0.247 to 0.227), less than the run-to-run noise of ' \
        f"{st.noise(runs, 'FFF', 'TTT'):.3f}" in ' '.join(readme.split())
    assert f"{data['cpu_s'] / 60:.1f}\nCPU-minutes" in readme or \
        f"{data['cpu_s'] / 60:.1f} CPU-minutes" in ' '.join(readme.split())
