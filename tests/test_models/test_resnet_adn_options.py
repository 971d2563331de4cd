"""ResNetADN(skip_aware_norms=False): the "without skip-aware BN" ablation backbone."""
import pytest
import torch
from mmdet.models.backbones import ResNet

from mmadn.models.backbones import ResNetADN


def test_default_keeps_skip_aware_norms():
    model = ResNetADN(depth=18)
    assert model.skip_aware_norms is True
    # one shared block per stage in ResNet-18, two norms each
    assert len(model.skip_norm_pairs()) == 8
    assert 'layer3.0.bn2_skip.running_mean' in model.state_dict()


def test_without_skip_aware_norms_has_plain_resnet_keys():
    model = ResNetADN(depth=18, skip_aware_norms=False)
    assert model.skip_norm_pairs() == []
    assert not any('_skip' in k for k in model.state_dict())
    assert set(model.state_dict()) == set(ResNet(depth=18).state_dict())
    # a plain mmdet ResNet-18 checkpoint loads strictly
    model.load_state_dict(ResNet(depth=18).state_dict(), strict=True)


@pytest.mark.parametrize('skip', ['TFTF', 'TTTT'])
def test_without_skip_aware_norms_shares_norms_across_subnets(skip):
    torch.manual_seed(0)
    shared = ResNetADN(depth=18, skip_aware_norms=False, out_indices=(3, )).eval()
    aware = ResNetADN(depth=18, out_indices=(3, )).eval()
    # give every running mean a distinct value so that the norm in use matters
    with torch.no_grad():
        for name, m in shared.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.weight.uniform_(0.5, 1.5)
        aware.load_state_dict(shared.state_dict(), strict=False)  # partner norms only
        for skip_name, _ in aware.skip_norm_pairs():
            aware.get_submodule(skip_name).running_mean.fill_(5.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        shared.set_skip(skip)
        aware.set_skip(skip)
        out_shared = shared(x)[0]
        out_aware = aware(x)[0]
        aware.copy_skip_norms_from_partners()  # now both norm sets are the same
        out_aware_copied = aware(x)[0]
        shared.set_skip('FFFF')
        out_super = shared(x)[0]
    assert shared.skip_str == 'FFFF'
    assert out_shared.shape == out_super.shape == (2, 512, 2, 2)
    # skipping really removes blocks, and without skip-aware norms the base-net uses the
    # partner norms: identical to a skip-aware model whose skip norms copy their partners
    assert not torch.allclose(out_shared, out_super)
    assert not torch.allclose(out_shared, out_aware)
    torch.testing.assert_close(out_shared, out_aware_copied)


def test_without_skip_aware_norms_trains_one_norm_set():
    model = ResNetADN(depth=18, skip_aware_norms=False, out_indices=(3, ), norm_eval=False).train()
    before = model.layer2[0].bn1.running_mean.clone()
    with model.skipping('base'):
        model(torch.randn(4, 3, 64, 64))
    # the base-net pass updated the (only) norms of the shared block
    assert not torch.allclose(model.layer2[0].bn1.running_mean, before)
    assert not hasattr(model.layer2[0], 'bn1_skip')


def test_without_skip_aware_norms_loads_an_adn_checkpoint_leaving_skip_norms_out():
    torch.manual_seed(0)
    adn = ResNetADN(depth=18)
    with torch.no_grad():
        adn.layer2[0].bn1.running_mean.uniform_(-1, 1)
        adn.layer2[0].bn1_skip.running_mean.fill_(7.0)
    shared = ResNetADN(depth=18, skip_aware_norms=False)
    state = adn.state_dict()
    shared.load_state_dict(state, strict=True)  # the 8 skip norms are left out
    assert sum('_skip' in k for k in state) == 8 * 5
    torch.testing.assert_close(shared.layer2[0].bn1.running_mean, adn.layer2[0].bn1.running_mean)
    assert not (shared.layer2[0].bn1.running_mean == 7.0).any()
    # the caller's state dict is untouched
    assert 'layer2.0.bn1_skip.running_mean' in state
