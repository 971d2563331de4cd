import os
import subprocess
import sys

import torch
import torchvision
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

import mmadn  # noqa: F401
from mmadn.models.backbones import ResNetADN
from ..conftest import ROOT


def _official_like_state(depth=50, avg_down=False):
    """A state dict in the authors' layout: torchvision keys plus the *_skip BNs."""
    torch.manual_seed(0)
    adn = ResNetADN(depth=depth, avg_down=avg_down)
    with torch.no_grad():  # distinct BN statistics and affine parameters everywhere
        for m in adn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.2, 0.5)
                m.running_mean.normal_(0, 0.05)
                m.bias.normal_(0, 0.05)
    state = dict(adn.state_dict())
    state['fc.weight'] = torch.randn(1000, 2048) * 0.01
    state['fc.bias'] = torch.zeros(1000)
    return {'module.' + k: v for k, v in state.items()}  # as saved from DDP


def _convert(src, out):
    proc = subprocess.run(
        [sys.executable, 'tools/model_converters/adn_official_to_mmadn.py',
         str(src),
         str(out)], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_convert_resnet50_adn_and_match_torchvision(tmp_path):
    state = _official_like_state()
    torch.save(state, tmp_path / 'official.pth')
    out = _convert(tmp_path / 'official.pth', tmp_path / 'out')
    assert 'ResNet-50-ADN (skip norms found)' in out
    ckpt = torch.load(tmp_path / 'out' / 'resnet50_adn_in1k.pth', map_location='cpu')
    clf = MMPRETRAIN_MODELS.build(
        dict(type='ImageClassifier', backbone=dict(type='ResNetADN', depth=50, out_indices=(3, )),
             neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead',
                                                               num_classes=1000, in_channels=2048)))
    clf.load_state_dict(ckpt['state_dict'], strict=True)
    clf.eval()
    tv = torchvision.models.resnet50()
    tv.load_state_dict({
        k[len('module.'):]: v
        for k, v in state.items() if '_skip' not in k
    }, strict=True)
    tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = clf(x, mode='tensor')
        ref = tv(x)
    assert (ours - ref).abs().max().item() < 1e-4
    # the base-net uses the converted skip norms
    assert torch.equal(clf.backbone.layer3[0].bn2_skip.weight,
                       state['module.layer3.0.bn2_skip.weight'])
    backbone = torch.load(tmp_path / 'out' / 'resnet50_adn_backbone.pth')['state_dict']
    assert 'layer1.0.bn1_skip.weight' in backbone and 'fc.weight' not in backbone


def test_convert_d_layout_and_plain_resnet(tmp_path):
    torch.save(_official_like_state(avg_down=True), tmp_path / 'd.pth')
    assert 'ResNet-50d-ADN' in _convert(tmp_path / 'd.pth', tmp_path / 'd')
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'r18.pth')
    out = _convert(tmp_path / 'r18.pth', tmp_path / 'r18')
    assert 'ResNet-18-ADN (skip norms copied from partners)' in out


def test_convert_refuses_non_resnet(tmp_path):
    torch.save({'weight': torch.zeros(3)}, tmp_path / 'x.pth')
    proc = subprocess.run([
        sys.executable, 'tools/model_converters/adn_official_to_mmadn.py',
        str(tmp_path / 'x.pth'),
        str(tmp_path / 'o')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode != 0
    assert 'not a ResNet(-ADN) state dict: found (0, 0, 0, 0) blocks' in proc.stderr


def test_convert_a_deep_stem_resnet_d_and_refuse_an_unknown_stem(tmp_path):
    """ResNet-vd (deep stem + average-pool downsample) as timm names it converts to
    ``ResNetADN(deep_stem=True, avg_down=True)``; an unknown stem layout gets one line."""
    from mmdet.models.backbones import ResNet

    from ..conftest import load_tool
    converter = load_tool('tools/model_converters/adn_official_to_mmadn.py')
    torch.manual_seed(0)
    plain = ResNet(depth=18, deep_stem=True, avg_down=True)
    plain.eval()  # mmdet's ResNet.train() returns None
    timm_names = {v: k for k, v in converter.DEEP_STEM.items()}
    state = {}
    for key, value in plain.state_dict().items():
        new = next((n for n in timm_names if key.startswith(n)), None)
        state[timm_names[new] + key[len(new):] if new else key] = value
    assert 'conv1.6.weight' in state and 'bn1.running_var' in state
    torch.save(state, tmp_path / 'r18d.pth')
    paths, meta = converter.convert(str(tmp_path / 'r18d.pth'), str(tmp_path / 'out'))
    assert (meta['depth'], meta['deep_stem'], meta['avg_down']) == (18, True, True)
    adn = ResNetADN(depth=18, deep_stem=True, avg_down=True)
    adn.eval()
    adn.load_state_dict(torch.load(paths['backbone'])['state_dict'])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(adn(x), plain(x)))
    state['stem_conv.weight'] = state.pop('conv1.0.weight')
    torch.save(state, tmp_path / 'odd.pth')
    proc = subprocess.run([
        sys.executable, 'tools/model_converters/adn_official_to_mmadn.py',
        str(tmp_path / 'odd.pth'),
        str(tmp_path / 'o')
    ], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 1
    (line, ) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unsupported stem layout (keys such as ['bn1.bias', ")
    assert line.endswith("expected the torchvision stem ('conv1.weight', 'bn1.*') or a deep "
                         "stem ('conv1.0/1/3/4/6' + 'bn1', as timm's ResNet-D, or mmdet's "
                         "'stem.*')")
