import pytest
import torch
from mmdet.registry import MODELS

import mmadn  # noqa: F401
from mmadn.analysis import count_active_params, count_flops


def test_stage_resnet_matches_adn_base_net_in_flops_and_params():
    x = torch.randn(1, 3, 96, 96)
    plain = MODELS.build(dict(type='StageResNet', depth=18, stage_blocks=(1, 1, 1, 1)))
    adn = MODELS.build(dict(type='ResNetADN', depth=18, skip='TTTT'))
    assert [len(getattr(plain, n)) for n in plain.res_layers] == [1, 1, 1, 1]
    assert count_flops(plain, x) == count_flops(adn, x)
    assert count_active_params(plain, x) == count_active_params(adn, x)
    # and fewer than the full ResNet-18 (the stem + 4 single blocks)
    assert count_active_params(plain, x) < sum(p.numel() for p in adn.parameters())


@pytest.mark.parametrize('blocks', [(2, 2, 3), (2, 0, 3, 2), '2232'])
def test_stage_resnet_rejects_bad_stage_blocks(blocks):
    with pytest.raises(ValueError, match=r'stage_blocks=.*expected 4 positive integers'):
        MODELS.build(dict(type='StageResNet', depth=50, stage_blocks=blocks))
