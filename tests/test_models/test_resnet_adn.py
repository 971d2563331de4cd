import copy
import re

import pytest
import torch
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.analysis import FlopAnalyzer
from mmengine.logging import MMLogger
from mmpretrain.models.backbones import ResNet as MMPretrainResNet
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmadn  # noqa: F401
from mmadn.models.backbones import ResNetADN, mmpretrain_resnet
from mmadn.models.layers import enumerate_skips, format_skip, parse_skip


def _tiny(**kw):
    kw.setdefault('depth', 18)
    m = ResNetADN(**kw)
    m.init_weights()
    return m


# -- skip parsing ---------------------------------------------------------------------------
def test_parse_skip_forms():
    assert parse_skip('TTFF', 4) == (True, True, False, False)
    assert parse_skip('ttff', 4) == (True, True, False, False)
    assert parse_skip([1, 0, 0, 1], 4) == (True, False, False, True)
    assert parse_skip('super', 4) == (False, ) * 4
    assert parse_skip('base', 5) == (True, ) * 5
    assert parse_skip(None, 4) == (False, ) * 4
    assert format_skip((True, False, True, False)) == 'TFTF'
    skips = [format_skip(s) for s in enumerate_skips(4)]
    assert len(skips) == 16 and len(set(skips)) == 16
    assert skips[0] == 'FFFF' and skips[-1] == 'TTTT'


@pytest.mark.parametrize('bad', ['TTXF', 'TTF', 'TTFFF', [True, False], [2, 0, 0, 0], 3.5])
def test_parse_skip_errors_name_value_and_form(bad):
    with pytest.raises(ValueError) as err:
        parse_skip(bad, 4)
    msg = str(err.value)
    assert repr(bad) in msg
    assert 'expected 4 letters of T/F' in msg and 'list of 4 bools' in msg


# -- structure ------------------------------------------------------------------------------
def test_resnet50_layout_matches_authors_rule():
    m = ResNetADN(depth=50)
    assert m.num_shared_blocks == (2, 2, 3, 2)
    assert m.skippable_blocks() == [
        'layer1.2', 'layer2.2', 'layer2.3', 'layer3.3', 'layer3.4', 'layer3.5', 'layer4.2'
    ]
    pairs = m.skip_norm_pairs()
    assert len(pairs) == 9 * 3  # 9 shared blocks x 3 BNs
    extra = sum(m.get_submodule(s).weight.numel() * 2 for s, _ in pairs)
    assert extra == 26112  # affine parameters of the skip-aware BNs (REFERENCE_FACTS)
    keys = set(m.state_dict())
    assert 'layer1.0.bn1_skip.running_var' in keys and 'layer4.1.bn3_skip.weight' in keys
    assert not any(k.startswith('layer1.2.') and '_skip' in k for k in keys)
    assert not any('downsample' in k and '_skip' in k for k in keys)
    assert 'bn1_skip.weight' not in keys  # the stem norm is not duplicated


def test_resnet101_skippable_layer3():
    m = ResNetADN(depth=101)
    assert m.num_shared_blocks == (2, 2, 12, 2)
    assert [b for b in m.skippable_blocks() if b.startswith('layer3')] == \
        [f'layer3.{i}' for i in range(12, 23)]


def test_num_shared_blocks_override_and_errors():
    m = ResNetADN(depth=50, num_shared_blocks=(1, 3, 5, 1))
    assert m.skippable_blocks()[:3] == ['layer1.1', 'layer1.2', 'layer2.3']
    with pytest.raises(ValueError, match=r'num_shared_blocks=\(3, 2, 3, 2\).*1\.\.2, 1\.\.3'):
        ResNetADN(depth=50, num_shared_blocks=(3, 2, 3, 2))
    with pytest.raises(KeyError, match='invalid depth 42'):  # as mmdet's ResNet(42)
        ResNetADN(depth=42)
    with pytest.raises(ValueError, match="skip='TTXF'"):
        ResNetADN(depth=18, skip='TTXF')


def test_each_registry_builds_the_adn_of_its_own_resnet_with_its_defaults():
    a = MMDET_MODELS.build(dict(type='ResNetADN', depth=18, skip='TTFF'))
    b = MMPRETRAIN_MODELS.build(dict(type='ResNetADN', depth=18, skip=[True, False, True, True]))
    assert type(a) is ResNetADN and isinstance(a, ResNet)
    assert type(b) is mmpretrain_resnet.ResNetADN and isinstance(b, MMPretrainResNet)
    # one name in configs, messages and the checkpoint meta
    assert type(a).__name__ == type(b).__name__ == 'ResNetADN'
    assert (a.norm_eval, a.out_indices) == (True, (0, 1, 2, 3))  # mmdet's defaults
    assert (b.norm_eval, b.out_indices) == (False, (3, ))  # mmpretrain's
    assert a.skip == (True, True, False, False) and a.skip_str == 'TTFF'
    assert b.skip_str == 'TFTT'


@pytest.mark.parametrize('src, dst', [(ResNetADN, mmpretrain_resnet.ResNetADN),
                                      (mmpretrain_resnet.ResNetADN, ResNetADN)],
                         ids=['mmdet-to-mmpretrain', 'mmpretrain-to-mmdet'])
def test_deep_stem_and_avg_down_checkpoints_load_across_the_two_layouts(src, dst, capsys):
    """mmdet's and mmpretrain's ResNets name the deep stem and the average-pool downsample
    differently; a checkpoint of either loads into the other and computes the same."""
    kw = dict(depth=50, stem_channels=16, base_channels=8, deep_stem=True, avg_down=True,
              out_indices=(0, 1, 2, 3))
    torch.manual_seed(0)
    a = src(**kw)
    a.init_weights()
    with torch.no_grad():
        for m in a.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.weight.uniform_(0.5, 1.5)
    b = dst(**kw)
    assert set(b.state_dict()) != set(a.state_dict())
    MMLogger.get_instance(f'mmadn_test_layouts_{dst.__module__}')  # writes to this capsys
    b.load_state_dict(a.state_dict(), strict=True)
    assert 'stem, layer1.0.downsample in the layout of the other' in capsys.readouterr().out
    a.eval(), b.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for u, v in zip(a(x), b(x)):
            assert torch.equal(u, v)


# -- numbers: FLOPs and equality with mmdet's ResNet ------------------------------------------
class _Classifier(nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def test_resnet50_gmacs_match_paper():
    model = _Classifier(ResNetADN(depth=50, out_indices=(3, ))).eval()
    x = torch.randn(1, 3, 224, 224)
    paper = {'FFFF': 4.11, 'TFFF': 3.90, 'TTFF': 3.46, 'TTTT': 2.58}
    for skip, gmacs in paper.items():
        model.backbone.set_skip(skip)
        flops = FlopAnalyzer(model, (x, )).unsupported_ops_warnings(False)
        measured = flops.uncalled_modules_warnings(False).total() / 1e9
        assert measured == pytest.approx(gmacs, rel=0.01), (skip, measured)


def test_super_net_equals_mmdet_resnet50():
    torch.manual_seed(0)
    ref = ResNet(depth=50, norm_eval=False)
    ref.init_weights()
    # non-trivial BN statistics and affine parameters
    for m in ref.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    adn = ResNetADN(depth=50)
    adn.load_state_dict(ref.state_dict(), strict=True)  # skip norms are filled in
    ref.eval(), adn.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        outs_ref, outs_adn = ref(x), adn(x)
    assert len(outs_adn) == 4
    for a, b in zip(outs_ref, outs_adn):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-6


# -- sub-networks: forward/backward, gradients, BN sets ---------------------------------------
def _bn_call_counts(model):
    counts = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            counts[name] = 0

            def hook(mod, inp, out, name=name):
                counts[name] += 1

            handles.append(m.register_forward_hook(hook))
    return counts, handles


def test_every_subnet_forward_backward_grads_and_bn_sets():
    model = _tiny().train()
    x = torch.randn(2, 3, 64, 64)
    counts, handles = _bn_call_counts(model)
    for skip in model.subnet_skips():
        model.set_skip(skip)
        model.zero_grad(set_to_none=True)
        for k in counts:
            counts[k] = 0
        outs = model(x)
        assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
        assert outs[-1].shape[-1] == 2
        sum(o.mean() for o in outs).backward()
        for i, flag in enumerate(skip):
            layer = f'layer{i + 1}'
            # ResNet-18: block 0 shared, block 1 skippable
            for name, p in model.named_parameters():
                if not name.startswith(layer + '.'):
                    continue
                in_skippable = name.startswith(layer + '.1.')
                is_skip_norm = '_skip.' in name
                is_block_norm = re.search(r'\.bn\d(_skip)?\.', name) is not None
                if in_skippable:
                    used = not flag
                elif is_block_norm:
                    used = is_skip_norm == flag
                else:  # convs and the downsample of the shared block
                    used = True
                assert (p.grad is not None) == used, (format_skip(skip), name)
            for name, c in counts.items():
                if not name.startswith(layer + '.'):
                    continue
                if name.startswith(layer + '.0.downsample'):
                    assert c == 1
                elif name.startswith(layer + '.1.'):
                    assert c == (0 if flag else 1), (format_skip(skip), name)
                else:
                    assert c == (1 if name.endswith('_skip') == flag else 0), (skip, name)
        assert counts['bn1'] == 1
    for h in handles:
        h.remove()


def test_switch_is_instant_and_skipping_restores():
    model = _tiny(skip='TTFF')
    params_before = {k: v.clone() for k, v in model.state_dict().items()}
    with model.skipping('base') as m:
        assert m.skip == (True, ) * 4
        assert model.layer4.skip_subpath and model.layer4[0].use_skip_norms
    assert model.skip_str == 'TTFF'
    assert model.layer1.skip_subpath and not model.layer3.skip_subpath
    assert model.layer1[0].use_skip_norms and not model.layer3[0].use_skip_norms
    model.skip = 'FFFF'
    assert not model.layer1.skip_subpath
    for k, v in model.state_dict().items():
        assert torch.equal(v, params_before[k])


def test_skipping_changes_outputs_and_zero_init_blocks_are_identity():
    x = torch.randn(1, 3, 64, 64)
    zero_init = _tiny().eval()  # zero_init_residual: every residual branch starts at 0
    with torch.no_grad():
        assert torch.equal(zero_init(x)[-1], zero_init.set_skip('TTTT')(x)[-1])
    model = _tiny(zero_init_residual=False).eval()
    with torch.no_grad():
        y_super = model(x)[-1]
        y_base = model.set_skip('TTTT')(x)[-1]
    assert not torch.allclose(y_super, y_base)


def test_with_cp_gives_the_same_gradients_and_statistics_across_two_passes():
    torch.manual_seed(0)
    ref = _tiny(norm_eval=False).train()
    cp = _tiny(with_cp=True, norm_eval=False).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    for m in (ref, cp):
        with m.skipping('super'):
            a = m(x)[-1].pow(2).mean()
        with m.skipping('base'):
            b = m(x)[-1].pow(2).mean()
        (a + b).backward()  # the base pass is recomputed after the skip was restored
    for (n, p), (_, q) in zip(ref.named_parameters(), cp.named_parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), n
    # the recomputation in backward does not update the BatchNorm statistics a second time
    for (n, p), (_, q) in zip(ref.named_buffers(), cp.named_buffers()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6), n
    assert ref.layer2[0].downsample[1].num_batches_tracked.item() == 2


def test_train_returns_self_norm_eval_and_frozen_stages():
    model = ResNetADN(depth=18, norm_eval=True, frozen_stages=1)
    assert model.train() is model
    assert model.eval() is model
    model.train()
    assert not model.layer1[0].bn1_skip.training
    assert not model.layer1[0].bn1_skip.weight.requires_grad
    assert model.layer2[0].bn1_skip.weight.requires_grad


# -- checkpoints ----------------------------------------------------------------------------
def test_plain_checkpoint_fills_skip_norms_and_logs(capsys):
    torch.manual_seed(1)
    ref = ResNet(depth=18)
    ref.init_weights()
    for m in ref.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.weight.data.uniform_(0.5, 1.5)
    sd = {'backbone.' + k: v for k, v in ref.state_dict().items()}
    holder = nn.Module()
    holder.backbone = ResNetADN(depth=18)
    MMLogger.get_instance('mmadn_test_fill')
    missing, unexpected = holder.load_state_dict(sd, strict=False)
    assert missing == [] and unexpected == []
    bb = holder.backbone
    assert torch.equal(bb.layer2[0].bn1_skip.running_mean, ref.layer2[0].bn1.running_mean)
    assert torch.equal(bb.layer4[0].bn2_skip.weight, ref.layer4[0].bn2.weight)
    out = capsys.readouterr()
    assert 'start as copies of their partners' in out.out + out.err
    assert '8 of them' in out.out + out.err  # 4 shared blocks x 2 BNs in ResNet-18


def test_adn_checkpoint_keeps_its_skip_norms():
    src = _tiny()
    with torch.no_grad():
        src.layer3[0].bn2_skip.weight.fill_(3.0)
    dst = ResNetADN(depth=18)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    assert torch.all(dst.layer3[0].bn2_skip.weight == 3.0)
    assert not torch.all(dst.layer3[0].bn2.weight == 3.0)


@pytest.mark.parametrize('src_depth, dst_depth', [(50, 101), (34, 50), (18, 34)])
def test_checkpoint_of_other_depth_is_refused(src_depth, dst_depth):
    sd = ResNet(depth=src_depth).state_dict()
    with pytest.raises(ValueError, match=f'depth={dst_depth}') as err:
        ResNetADN(depth=dst_depth).load_state_dict(sd, strict=False)
    assert 'blocks per stage' in str(err.value)


def test_random_init_skip_norms_equal_partners():
    m = _tiny()
    for s, p in m.skip_norm_pairs():
        a, b = m.get_submodule(s), m.get_submodule(p)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    # zero_init_residual reached both sets of the last norm of each block
    assert torch.all(m.layer1[0].bn2_skip.weight == 0)


def test_syncbn_conversion_keeps_skip_norms_switchable():
    model = nn.SyncBatchNorm.convert_sync_batchnorm(_tiny(skip='TFFF'))
    block = model.layer1[0]
    assert isinstance(block.bn1_skip, nn.SyncBatchNorm)
    assert block.norm1 is block.bn1_skip  # the property follows the converted module
    model.set_skip('FFFF')
    assert block.norm1 is block.bn1


def test_init_cfg_pretrained_from_a_plain_resnet_file(tmp_path, capsys):
    torch.manual_seed(2)
    ref = ResNet(depth=18)
    ref.init_weights()
    with torch.no_grad():
        ref.layer3[0].bn1.weight.uniform_(0.5, 1.5)
    torch.save(ref.state_dict(), tmp_path / 'r18.pth')  # a bare state dict, like torchvision's
    MMLogger.get_instance('mmadn_test_pretrained')  # a logger writing to the captured stdout
    m = ResNetADN(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'r18.pth')))
    m.init_weights()
    assert torch.equal(m.layer3[0].bn1.weight, ref.layer3[0].bn1.weight)
    assert torch.equal(m.layer3[0].bn1_skip.weight, ref.layer3[0].bn1.weight)
    out = capsys.readouterr()
    assert 'start as copies of their partners' in out.out + out.err
    assert 'missing keys' not in (out.out + out.err).lower()


def test_plugins_pass_through_and_every_subnet_runs():
    plugins = [
        dict(cfg=dict(type='ContextBlock', ratio=1. / 4), stages=(False, True, True, True),
             position='after_conv3')
    ]
    m = _tiny(depth=50, plugins=plugins, base_channels=16).eval()
    assert len(m.layer2[0].after_conv3_plugin_names) == 1
    assert not m.layer1[0].after_conv3_plugin_names
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = {format_skip(s): m.set_skip(s)(x)[-1] for s in [(False, ) * 4, (True, ) * 4]}
    assert outs['FFFF'].shape == outs['TTTT'].shape == (1, 512, 2, 2)


def test_skip_flags_as_tensors_and_norm_set_views_follow_the_model():
    """The tensor copy of each stage's flag follows set_skip and stays out of checkpoints;
    the norm-set views of the shared blocks (what compiled graphs call) see the block's
    modules through a deep copy and a dtype change, and run the same as the eager model."""
    torch.manual_seed(0)
    model = ResNetADN(depth=18, base_channels=8, stem_channels=8).eval()
    keys = set(model.state_dict())
    model.set_skip('TFTF')
    assert [bool(getattr(model, n).skip_flag) for n in model.res_layers] == [1, 0, 1, 0]
    assert model.skip_flag_buffers() == [f'layer{i}.skip_flag' for i in range(1, 5)]
    assert set(model.state_dict()) == keys  # non-persistent: checkpoints do not change
    block = model.layer1[0]
    assert block.norm_set_view(True).norm1 is block.bn1_skip
    assert block.norm_set_view(False).norm1 is block.bn1
    assert block.norm1 is block.bn1_skip  # the eager block follows set_skip ...
    model.set_skip('FFFF')
    assert block.norm1 is block.bn1 and block.norm_set_view(True).norm1 is block.bn1_skip
    assert 'view' not in ' '.join(n for n, _ in model.named_modules())
    twin = copy.deepcopy(model).double()
    view = twin.layer1[0].norm_set_view(True)
    assert view.norm1 is twin.layer1[0].bn1_skip and view.conv1.weight.dtype == torch.float64
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        model.set_skip('TFFF')
        expected = model.layer1(x)
        assert torch.equal(model.layer1._shared_path(x), expected)
        model.set_skip('FFFF')
        assert torch.equal(model.layer1._full_path(x), model.layer1(x))
