"""The study's building blocks: variant configs, the skip-norm distance, statistics."""
import math

import pytest
import study_common as sc
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

import mmadn  # noqa: F401
from mmadn.models.backbones import ResNetADN

DET_DEMO = 'configs/demo/mask_rcnn_r18_adn_fpn_demo.py'


def _hooks(cfg):
    return [h for h in cfg.custom_hooks if h['type'] == 'SubPathSpecializationHook']


def test_check_variants_names_the_bad_one():
    assert sc.check_variants(['adn', 'base']) == ['adn', 'base']
    with pytest.raises(ValueError, match=r"\['adn_kd'\].*'adn_no_kd'"):
        sc.check_variants(['adn', 'adn_kd'])


def test_study_skips_always_has_super_and_base():
    assert sc.study_skips('TTFF') == ['FFFF', 'TTFF', 'TTTT']
    assert sc.study_skips('all')[0] == 'FFFF' and len(sc.study_skips('all')) == 16
    with pytest.raises(ValueError, match='TTXF'):
        sc.study_skips('TTXF')


def test_apply_variant_builds_each_compared_model():
    cfg = Config.fromfile(sc.osp.join(sc.ROOT, DET_DEMO))
    skips = ['FFFF', 'TTTT']
    out = {v: sc.apply_variant(cfg, v, skips) for v in sc.VARIANTS}
    # the source config is left as it was
    assert cfg.model.backbone.type == 'ResNetADN' and len(_hooks(cfg)) == 1
    assert 'skip_aware_norms' not in cfg.model.backbone

    assert _hooks(out['adn']) == _hooks(cfg)
    assert out['adn_no_skipbn'].model.backbone.skip_aware_norms is False
    assert _hooks(out['adn_no_skipbn']) == _hooks(cfg)
    for v in ('adn_no_kd', 'adn_neither'):
        (hook, ) = _hooks(out[v])
        assert hook['feat_kd'] is None and hook['logit_kd'] is None
        assert hook['base_task_loss'] is True
    assert out['adn_no_kd'].model.backbone.skip_aware_norms is True
    assert out['adn_neither'].model.backbone.skip_aware_norms is False
    for v in ('plain', 'base'):
        assert _hooks(out[v]) == []
    for v in sc.VARIANTS:
        if v != 'base':
            assert out[v].test_cfg == dict(type='SubnetTestLoop', skips=skips, profile=False)
    assert out['base'].test_cfg == dict(type='TestLoop')

    # the built backbones: skip norms exactly where the variant has them, and the
    # base-depth network has the shared blocks only (the base-net's depth)
    backbones = {v: MODELS.build(out[v].model.backbone) for v in ('adn', 'plain', 'base')}
    adn, plain, base = backbones['adn'], backbones['plain'], backbones['base']
    assert len(adn.skip_norm_pairs()) == 8
    assert not [n for n, _ in plain.named_modules() if n.endswith('_skip')]
    assert type(base).__name__ == 'StageResNet'
    assert [len(getattr(base, n)) for n in base.res_layers] == list(adn.num_shared_blocks)
    # plain = the adn backbone without its skip norms: the same other parameters
    adn_keys = {k for k in adn.state_dict() if '_skip.' not in k}
    assert adn_keys == set(plain.state_dict())


def _randomized_backbone(seed=0):
    torch.manual_seed(seed)
    net = ResNetADN(depth=18, base_channels=8, stem_channels=8)
    for _, module in net.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return net


def test_skip_norm_distances_match_a_hand_computation():
    net = _randomized_backbone()
    rows = sc.skip_norm_distances(net)
    pairs = net.skip_norm_pairs()
    assert [r['name'] for r in rows] == [name for _, name in pairs]
    assert [r['first'] for r in rows] == [True, False] * 4
    assert [r['stage'] for r in rows] == ['layer1'] * 2 + ['layer2'] * 2 + \
        ['layer3'] * 2 + ['layer4'] * 2
    modules = dict(net.named_modules())
    for (skip_name, name), row in zip(pairs, rows):
        a, b = modules[name], modules[skip_name]
        total_norm = total_raw = 0.0
        for c in range(a.num_features):
            mu, mu_s = float(a.running_mean[c]), float(b.running_mean[c])
            var, var_s = float(a.running_var[c]), float(b.running_var[c])
            total_norm += abs(mu_s - mu) / math.sqrt((var + var_s) / 2 + a.eps)
            total_raw += abs(mu_s - mu)
        assert row['distance'] == pytest.approx(total_norm / a.num_features, rel=1e-6)
        assert row['raw'] == pytest.approx(total_raw / a.num_features, rel=1e-6)


def test_skip_norm_distances_zero_for_equal_statistics():
    net = _randomized_backbone()
    net.copy_skip_norms_from_partners()
    assert all(r['distance'] == 0.0 and r['raw'] == 0.0 for r in sc.skip_norm_distances(net))
    assert sc.skip_norm_distances(ResNetADN(depth=18, skip_aware_norms=False)) == []


def test_bn_distance_summary_groups():
    rows = [
        dict(name=f'n{i}', stage=f'layer{i // 2 + 1}', first=i % 2 == 0, distance=d)
        for i, d in enumerate([0.0, 1.0, 0.2, 2.0, 0.4, 3.0, 0.6, 4.0])
    ]
    other = [dict(r, distance=r['distance'] * 2) for r in rows]
    s = sc.bn_distance_summary([rows, other])
    assert s['first norm, stage 1'] == (0.0, 0.0)
    # later first norms: 0.4 and 0.8 over the two seeds; others: 2.5 and 5.0
    assert s['first norm, later stages'][0] == pytest.approx(0.6)
    assert s['first norm, later stages'][1] == pytest.approx(math.sqrt(0.08))
    assert s['other shared-block norms'][0] == pytest.approx(3.75)


def test_statistics_and_checks():
    assert sc.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert sc.mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in sc.mean_std([]))
    assert sc.fmt_ms([1.0, 3.0]) == '2.0 ± 1.4' and sc.fmt_ms([2.0]) == '2.0'
    runs = [
        dict(variant='adn', seed=s, results={
            'FFFF': {
                'm': a
            },
            'TTTT': {
                'm': b
            }
        }) for s, a, b in ((0, 90.0, 88.0), (1, 92.0, 86.0))
    ]
    runs += [
        dict(variant='plain', seed=s, results={
            'FFFF': {
                'm': a
            },
            'TTTT': {
                'm': b
            }
        }) for s, a, b in ((0, 91.0, 20.0), (1, 91.5, 30.0))
    ]
    runs += [
        dict(variant='base', seed=s, base_skip='TTTT', results={'static': {
            'm': a
        }}) for s, a in ((0, 89.0), (1, 89.5))
    ]
    assert sc.values(runs, 'base', 'TTTT', 'm') == [89.0, 89.5]
    assert sc.values(runs, 'base', 'FFFF', 'm') == []
    rows = {
        r[0]: r
        for r in sc.standard_checks(runs, ['adn', 'plain', 'base'], 'm', 'FFFF', 'TTTT')
    }
    naive = rows['ADN base-net beats naive skipping of a normally trained net']
    assert naive[3] == '+62.0' and naive[4] == '**holds**'
    sup = rows['ADN super-net beats the individual super-depth network']
    assert sup[3] == '-0.2' and sup[4] == '**does not hold** (within noise)'
    assert rows['ADN base-net beats the individual base-depth network'][3] == '-2.2'
    assert sc.checks_table(sc.standard_checks(runs, ['adn'], 'm', 'FFFF', 'TTTT')) \
        .startswith('_No comparison')
    assert len(sc.checks_table(list(rows.values())).splitlines()) == 2 + 3
    table = sc.main_table(runs, ['adn', 'plain', 'base'], [('m', 'top-1')], 'FFFF', 'TTTT')
    lines = table.splitlines()
    assert len(lines) == 5 and lines[4].startswith('| `base` |') and 'n/a' in lines[4]


def test_subnet_monotonicity():
    accs = {'FF': 90.0, 'TF': 89.5, 'FT': 85.0, 'TT': 84.0}
    # pairs: FF->TF 0.5, FF->FT 5.0, TF->TT 5.5, FT->TT 1.0
    assert sc.subnet_monotonicity(accs, tol=1.0) == (2, 4, 5.5)


def test_interrupted_study_says_so_and_estimates_the_cpu_time():
    runs = [
        dict(variant=v, seed=s, cpu_s=c, train_s=1.0, test_s=1.0, results={})
        for v, s, c in (('adn', 0, 40.0), ('plain', 0, 20.0), ('adn', 1, 44.0))
    ]
    data = dict(setup=dict(seeds=[0, 1, 2], variants=['adn', 'plain'], threads=1), runs=runs,
                wall_s=600.0, cpu_s=110.0, complete=False)
    # 3 seeds x (42 + 20) CPU seconds
    assert sc.planned_cpu_seconds(data) == pytest.approx(186.0)
    line = sc.timing_line(data)
    assert 'CPU (user + sys) 1.8 min' in line and 'only the 3 of 6 run(s)' in line
    assert 'about 3 CPU minutes (2 min on 2 cores)' in line
    data['setup']['variants'].append('base')
    assert sc.planned_cpu_seconds(data) is None
    data['complete'] = True
    assert 'Interrupted' not in sc.timing_line(data)
