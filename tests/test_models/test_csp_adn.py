"""CSPNeXtADN / CSPDarknetADN: the super-net is mmdet's CSPNeXt / CSPDarknet with the same
weights, skipping runs exactly the blocks it should, plain checkpoints load, the split is
overridable, the static export of every depth and the README's per-size table. (Upstream
arguments, defaults and errors: test_upstream_parity.py.)"""
import os
import os.path as osp
import re

import pytest
import torch
from mmdet.models.backbones import CSPDarknet, CSPNeXt
from mmdet.registry import MODELS

import mmadn  # noqa: F401
from mmadn.models.backbones import CSPDarknetADN, CSPNeXtADN
from ..conftest import ROOT
from .adn_backbone_checks import load_plain_checkpoint, one_thread, run_every_subnet

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

# blocks per stage 2, 4, 4, 2 (CSPNeXt) / 1, 3, 3, 1 (CSPDarknet); 8 .. 128 channels
CASES = {
    'cspnext':
    (CSPNeXt, CSPNeXtADN, dict(deepen_factor=0.67,
                               widen_factor=0.125), [['stage1.1.blocks.1'],
                                                     ['stage2.1.blocks.2', 'stage2.1.blocks.3'],
                                                     ['stage3.1.blocks.2', 'stage3.1.blocks.3']]),
    'cspdarknet': (CSPDarknet, CSPDarknetADN, dict(deepen_factor=0.33,
                                                   widen_factor=0.125), [['stage2.1.blocks.2'],
                                                                         ['stage3.1.blocks.2']]),
}


def _randomized(module):
    """Random BN statistics and affine parameters, so that norm mix-ups show."""
    torch.manual_seed(0)
    module.init_weights()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module


@pytest.fixture(scope='module', params=list(CASES))
def case(request):
    up_cls, adn_cls, kw, blocks = CASES[request.param]
    plain = _randomized(up_cls(**kw))
    adn = adn_cls(**kw)
    adn.load_state_dict(plain.state_dict())
    return plain, adn, kw, blocks


def test_super_net_is_the_upstream_backbone(case):
    plain, adn, _, _ = case
    x = torch.randn(2, 3, 64, 64)
    for mode in ('eval', 'train'):
        getattr(plain, mode)()
        getattr(adn, mode)()
        with torch.no_grad():
            ours, theirs = adn(x), plain(x)
        assert [tuple(o.shape) for o in ours] == [tuple(o.shape) for o in theirs]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs)), mode
    # the keys: upstream's, plus a bn_skip for every normed ConvModule of a shared block
    extra = set(adn.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(adn.state_dict())
    assert extra == {
        f'{s}.{f}'
        for s, _ in adn.skip_norm_pairs()
        for f in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    }
    assert all(s.endswith('.bn_skip') and '.blocks.' in s for s, _ in adn.skip_norm_pairs())


def test_skipping_changes_only_its_blocks(case):
    _, adn, _, blocks = case
    assert adn.skippable_stages == [b[0].split('.')[0] for b in blocks]
    assert adn.num_skippable_stages == len(blocks) and adn.skip_str == 'F' * len(blocks)
    x = torch.randn(2, 3, 64, 64)
    outs = run_every_subnet(adn, x, blocks)
    # a stage's flag changes its own output and the later ones, never an earlier one
    stage_of_out = [int(n[-1]) for n in adn.layers[2:]]  # out_indices (2, 3, 4)
    for skip, o in outs.items():
        first = skip.find('T')
        if first < 0:
            continue
        skipped = int(adn.skippable_stages[first][-1])
        for idx, stage in enumerate(stage_of_out):
            same = torch.equal(o[idx], outs['F' * len(skip)][idx])
            assert same is (stage < skipped), (skip, stage)


def test_plain_checkpoint_loads_with_skip_norms_copied(case, tmp_path):
    plain, _, kw, _ = case
    cls = type(case[1])
    adn = load_plain_checkpoint(cls, plain, tmp_path, **kw)
    assert adn.skip_str == 'F' * adn.num_skippable_stages
    # init_weights without a checkpoint: each skip norm a copy of its partner too
    fresh = cls(**kw)
    fresh.init_weights()
    for s, p in fresh.skip_norm_pairs():
        assert torch.equal(fresh.get_submodule(s).weight, fresh.get_submodule(p).weight)


def test_split_is_overridable():
    kw = dict(deepen_factor=0.67, widen_factor=0.125)  # blocks 2, 4, 4, 2
    adn = CSPNeXtADN(**kw, num_shared_blocks=(2, 1, 4, 2))  # stage 2 only, 3 skippable
    assert adn.skippable_stages == ['stage2'] and adn.num_skippable_stages == 1
    assert adn.skippable_blocks() == ['stage2.1.blocks.1', 'stage2.1.blocks.2', 'stage2.1.blocks.3']
    assert adn.static_stage_blocks('T') == (2, 1, 4, 2)
    assert {s.split('.blocks.')[0] for s, _ in adn.skip_norm_pairs()} == {'stage2.1'}
    for bad in ((1, 2, 2), (0, 2, 2, 2), (1, 5, 2, 2), (1, 2, 2, 1), [1, 2, 2, True], '1222'):
        with pytest.raises(ValueError, match=r'within \(1\.\.2, 1\.\.4, 1\.\.4, 2\)') as err:
            CSPNeXtADN(**kw, num_shared_blocks=bad)
        assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match=r'no stage can skip: blocks per stage \(1, 1, 1, 1\)'):
        CSPNeXtADN(deepen_factor=0.167, widen_factor=0.125)  # RTMDet-tiny
    with pytest.raises(ValueError, match='no stage can skip'):
        CSPNeXtADN(**kw, num_shared_blocks=(2, 4, 4, 2))


def test_static_export_of_every_depth(case):
    _, adn, kw, _ = case
    adn.eval()
    cfg = dict(type='mmdet.' + type(adn).__name__, **kw, skip='base', init_cfg=None)
    x = torch.randn(1, 3, 64, 64)
    for skip in adn.subnet_skips():
        static_cfg = adn.static_cfg(cfg, skip)
        assert static_cfg['type'] == 'mmdet.' + type(adn)._upstream.__name__
        assert 'skip' not in static_cfg and static_cfg['deepen_factor'] == 1.0
        static = MODELS.build(static_cfg)
        static.eval()  # mmdet's CSPNeXt.train returns None
        static.load_state_dict(adn.static_state_dict(skip), strict=True)
        assert tuple(len(getattr(static, n)[-1].blocks)
                     for n in static.layers[1:]) == adn.static_stage_blocks(skip)
        with torch.no_grad(), adn.skipping(skip):
            assert all(torch.equal(a, b) for a, b in zip(adn(x), static(x))), skip


def _readme_table():
    """The rows of the README's table of skippable stages per size."""
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    start = text.index('<!-- csp-sizes -->')
    rows = []
    for line in text[start:].splitlines()[3:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def _mmdet_value(family: str, size: str, key: str) -> str:
    """``key=<value>`` in mmdet's config of that size (or the base it inherits it from)."""
    import mmdet
    folder = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', family.lower())
    name = next(n for n in sorted(os.listdir(folder))
                if n.startswith(f'{family.lower()}_{size}_') and n.endswith('coco.py'))
    while True:
        with open(osp.join(folder, name)) as f:
            text = f.read()
        found = re.search(key + r'=([\d.]+)', text)
        if found:
            return found.group(1)
        name = re.search(r"_base_ = '\./([^']+)'", text).group(1)


def test_readme_table_of_sizes():
    from mmadn.models.necks import YOLOXPAFPNADN, CSPNeXtPAFPNADN
    rows = _readme_table()
    assert len(rows) == 11
    for name, factor, blocks, stages, subnets, neck_layers in rows:
        family, size = name.split('-')
        assert float(factor) == float(_mmdet_value(family, size, 'deepen_factor')), name
        cls = CSPNeXtADN if family == 'RTMDet' else CSPDarknetADN
        up = (CSPNeXt if family == 'RTMDet' else CSPDarknet)(deepen_factor=float(factor),
                                                             widen_factor=0.125)
        counts = tuple(len(getattr(up, n)[-1].blocks) for n in up.layers[1:])
        assert blocks == ', '.join(map(str, counts)), name
        if stages == 'none':
            with pytest.raises(ValueError, match='no stage can skip'):
                cls(deepen_factor=float(factor), widen_factor=0.125)
            assert subnets == '1'
        else:
            adn = cls(deepen_factor=float(factor), widen_factor=0.125)
            assert stages == ', '.join(s[-1] for s in adn.skippable_stages), name
            assert int(subnets) == 2**adn.num_skippable_stages
        neck = (CSPNeXtPAFPNADN if family == 'RTMDet' else YOLOXPAFPNADN)(
            [8, 16, 32], 8, num_csp_blocks=int(_mmdet_value(family, size, 'num_csp_blocks')))
        assert int(neck_layers) == neck.num_skippable_stages, name
    assert [r[0]
            for r in rows] == [f'RTMDet-{s}' for s in ('tiny', 's', 'm', 'l', 'x')
                               ] + [f'YOLOX-{s}' for s in ('nano', 'tiny', 's', 'm', 'l', 'x')]
