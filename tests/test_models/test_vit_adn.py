"""VisionTransformerADN: layout, GMACs against the authors' table, equivalence with plain
mmpretrain ViTs, every sub-network forward/backward, one training step with the hook."""
import os.path as osp

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS

import mmadn  # noqa: F401
from mmadn.analysis import count_flops
from mmadn.models.backbones import VisionTransformerADN
from ..conftest import ROOT
from .adn_backbone_checks import (classifier_train_step_with_hook, flops_g, load_plain_checkpoint,
                                  one_thread, run_every_subnet, skip_norms_in_use,
                                  stage_feature_shapes)

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

TINY = dict(arch=dict(embed_dims=32, num_layers=8, num_heads=2, feedforward_channels=64),
            img_size=32, patch_size=8, drop_rate=0.0)


def _classifier(backbone, in_channels=768, num_classes=1000):
    return MODELS.build(
        dict(
            type='ImageClassifier', backbone=backbone, neck=None,
            head=dict(type='VisionTransformerClsHead', num_classes=num_classes,
                      in_channels=in_channels)))


@pytest.fixture(scope='module')
def vit_b16():
    return _classifier(dict(type='VisionTransformerADN', arch='b', patch_size=16))


def test_vit_b16_layout_and_keys(vit_b16):
    m = vit_b16.backbone
    assert m.num_skippable_stages == 4 and m.group_size == 3
    assert m.skippable_blocks() == ['layers.2', 'layers.5', 'layers.8', 'layers.11']
    pairs = m.skip_norm_pairs()
    assert len(pairs) == 8 * 2  # 8 kept layers x (ln1, ln2)
    assert pairs[0] == ('layers.0.ln1_skip', 'layers.0.ln1')
    assert MODELS.get('VisionTransformerADN') is VisionTransformerADN


def test_keys_are_the_plain_keys_plus_skip_norms():
    m = VisionTransformerADN(**TINY)
    plain = set(VisionTransformer(**TINY).state_dict())
    extra = set(m.state_dict()) - plain
    assert plain <= set(m.state_dict())
    assert extra == {
        f'layers.{i}.ln{j}_skip.{f}'
        for i in (0, 2, 4, 6)
        for j in (1, 2)
        for f in ('weight', 'bias')
    }


def test_sdpa_is_counted_for_plain_vit_b16():
    backbone = VisionTransformer(arch='b', patch_size=16)
    x = torch.zeros(1, 3, 224, 224)
    # mmadn.analysis.count_flops is this analyzer, with the SDPA handle that importing
    # mmadn registers in mmengine's defaults
    analyzer = FlopAnalyzer(backbone, (x, )).unsupported_ops_warnings(False)
    by_op = analyzer.by_operator()
    # the two attention matmuls: 12 layers x 12 heads x 197^2 x 64 x 2
    assert by_op['scaled_dot_product_attention'] == 12 * 12 * 197 * 197 * 64 * 2
    head = 768 * 1000  # the 1000-class linear head
    assert abs((analyzer.total() + head) / 1e9 - 17.58) / 17.58 < 0.005
    assert count_flops(backbone, x) == analyzer.total()


def test_vit_b16_gmacs_match_authors_table(vit_b16):
    model = vit_b16
    authors = {'FFFF': 17.58, 'TTFT': 13.21, 'TTTT': 11.76}
    for skip, ref in authors.items():
        got = flops_g(model, model.backbone, skip)
        assert abs(got - ref) / ref < 0.02, (skip, got, ref)


def test_plain_checkpoint_loads_super_equals_plain_and_base_equals_kept_layers(tmp_path):
    torch.manual_seed(0)
    plain = VisionTransformer(**TINY)
    plain.init_weights()
    for p in plain.parameters():  # non-trivial norms
        p.data.add_(0.05 * torch.randn_like(p))
    adn = load_plain_checkpoint(VisionTransformerADN, plain, tmp_path, **TINY)
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(adn(x)[0], plain(x)[0], rtol=0, atol=0)
        # the base-net is the plain ViT made of the kept layers 0, 2, 4, 6
        short = VisionTransformer(**dict(TINY, arch=dict(TINY['arch'], num_layers=4)))
        state = {k: v for k, v in plain.state_dict().items() if not k.startswith('layers.')}
        for new, old in enumerate((0, 2, 4, 6)):
            state.update({
                k.replace(f'layers.{old}.', f'layers.{new}.', 1): v
                for k, v in plain.state_dict().items() if k.startswith(f'layers.{old}.')
            })
        short.load_state_dict(state)
        short.eval()
        with adn.skipping('TTTT'):
            torch.testing.assert_close(adn(x)[0], short(x)[0], rtol=0, atol=0)
        assert not torch.allclose(adn(x)[0], short(x)[0])


def test_every_subnet_forward_backward_and_norm_sets():
    torch.manual_seed(0)
    m = VisionTransformerADN(**TINY, out_type='featmap')
    m.init_weights()
    x = torch.randn(2, 3, 32, 32)
    stage_blocks = [['layers.1'], ['layers.3'], ['layers.5'], ['layers.7']]
    outs = run_every_subnet(m, x, stage_blocks)
    assert len(outs) == 16 and outs['FFFF'][0].shape == (2, 32, 4, 4)
    assert not torch.allclose(outs['FFFF'][0], outs['TTTT'][0])
    assert skip_norms_in_use(m, x, 'TFFT') == {
        'layers.0.ln1_skip', 'layers.0.ln2_skip', 'layers.6.ln1_skip', 'layers.6.ln2_skip'
    }
    # stage features: one (N, C, L, 1) token map per group, recorded by forward hooks
    assert stage_feature_shapes(m, x) == [(2, 32, 17, 1)] * 4


def test_one_training_step_with_the_hook():
    model = _classifier(dict(type='VisionTransformerADN', **TINY), in_channels=32, num_classes=5)
    model.init_weights()
    torch.nn.init.normal_(model.head.layers.head.weight, std=0.5)  # mmpretrain zero-inits it
    log_vars, changed = classifier_train_step_with_hook(model, 5, 32)
    assert log_vars['loss_kd_feat'] > 0 and log_vars['loss_kd_logits'] > 0
    assert {
        'backbone.layers.7.attn.qkv.weight', 'backbone.layers.0.ln1_skip.weight',
        'backbone.layers.0.ln1.weight', 'head.layers.head.weight'
    } <= changed
    assert model.backbone.skip_str == 'FFFF'


def test_bad_layer_count_is_refused():
    with pytest.raises(ValueError, match='6 encoder layers cannot form 4 groups'):
        VisionTransformerADN(arch=dict(TINY['arch'], num_layers=6), img_size=32, patch_size=8)


@pytest.mark.parametrize('name,patch', [('vit-base-p16_adn_4xb256_in1k.py', 16),
                                        ('vit-base-p32_adn_4xb256_in1k.py', 32)])
def test_imagenet_configs_build(name, patch):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'imagenet', name))
    cfg.model.backbone.pop('init_cfg', None)
    assert cfg.model.backbone.arch == 'b'
    cfg.model.backbone.arch = TINY['arch']  # the recipe as is, a small ViT (fast)
    cfg.model.head.in_channels = 32
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, VisionTransformerADN)
    assert model.backbone.patch_embed.projection.kernel_size == (patch, patch)
    assert cfg.optim_wrapper.optimizer.lr == 7.5e-4 and cfg.train_cfg.max_epochs == 300
    hook = cfg.custom_hooks[0]
    assert hook.type == 'SubPathSpecializationHook' and hook.logit_kd.topk == 500
    assert cfg.val_cfg.type == 'SubnetValLoop'
