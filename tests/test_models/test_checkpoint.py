"""Checkpoint files: what a file that does not fit is, split checks, resume candidates."""
import os
import os.path as osp

import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

import mmadn  # noqa: F401
from mmadn.engine.runner.resume import find_resume_checkpoint
from mmadn.models import (CheckpointMismatchError, adn_backbone_meta, check_checkpoint_fits,
                          load_checkpoint_file, load_strictly)
from mmadn.models.backbones import ResNetADN
from mmadn.utils.checkpoint_safety import CorruptCheckpointError
from mmadn.utils.fileio import temporary_path
from ..conftest import load_tool, requires_allow_list


def _classifier(depth=18, num_classes=4, backbone_type='ResNetADN'):
    # in mmpretrain's scope, whichever scope an earlier test left current
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MMPRETRAIN_MODELS.build(
            dict(
                type='ImageClassifier', backbone=dict(type=backbone_type, depth=depth),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=512 if depth < 50 else 2048)))


def _train_ckpt(path, model, **meta):
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=0, iter=2, **meta)), path)
    return str(path)


# -- class 2: another split ---------------------------------------------------------------
def test_a_checkpoint_of_another_split_is_refused_naming_the_split():
    torch.manual_seed(0)
    other = ResNetADN(depth=34, num_shared_blocks=(1, 2, 3, 1))
    default = ResNetADN(depth=34)  # (2, 2, 3, 2)
    before = {k: v.clone() for k, v in default.state_dict().items()}
    # fewer skip norms than this split needs: no longer filled from their partners
    with pytest.raises(CheckpointMismatchError) as info:
        default.load_state_dict(other.state_dict(), strict=False)
    msg = str(info.value)
    assert 'trained with num_shared_blocks=(1, 2, 3, 1)' in msg
    assert 'this ResNetADN has num_shared_blocks=(2, 2, 3, 2)' in msg
    assert '4 skip norms of this backbone are missing, e.g. layer1.1.bn1_skip' in msg
    assert all(torch.equal(v, default.state_dict()[k]) for k, v in before.items())
    # more skip norms than this split has: refused as well (not silently dropped)
    with pytest.raises(
            CheckpointMismatchError, match=r'trained with num_shared_blocks='
            r'\(2, 2, 3, 2\), this ResNetADN has num_shared_blocks=\(1, 2, 3, 1\)'):
        other.load_state_dict(default.state_dict(), strict=False)
    # a checkpoint without any skip norm is still filled (torchvision / mmdet ResNet)
    plain = {k: v for k, v in other.state_dict().items() if '_skip.' not in k}
    default.load_state_dict(plain, strict=True)
    assert torch.equal(default.layer1[1].bn1_skip.weight, plain['layer1.1.bn1.weight'])


def test_the_split_is_recorded_in_meta_and_checked_on_load():
    model = ResNetADN(depth=34, num_shared_blocks=(1, 2, 3, 1))
    meta = adn_backbone_meta(model)
    assert meta['type'] == 'ResNetADN' and meta['num_shared_blocks'] == [1, 2, 3, 1]
    assert meta['skip_aware_norms'] is True and meta['num_skippable_stages'] == 4
    ckpt = dict(state_dict=model.state_dict(), meta=dict(adn_backbone=meta))
    check_checkpoint_fits(ResNetADN(depth=34, num_shared_blocks=(1, 2, 3, 1)), ckpt, 'a.pth')
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint_fits(ResNetADN(depth=34), ckpt, 'a.pth', strict=False)
    assert str(info.value) == (
        "checkpoint a.pth was trained with ResNetADN(num_shared_blocks=(1, 2, 3, 1)) (its "
        "meta['adn_backbone']), but this config builds ResNetADN(num_shared_blocks=(2, 2, 3, "
        '2)): set model.backbone.num_shared_blocks=(1, 2, 3, 1) to match the checkpoint')


# -- class 8: files of another kind ------------------------------------------------------
def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, good)
    data = good.read_bytes()
    cases = {
        'empty.pth': (b'', 'an empty file (0 bytes)'),
        'notes.pth': (b'lr=0.1\nepochs=12\n', "a text file (17 bytes, starting 'lr=0.1')"),
        'cut.pth': (data[:len(data) // 2], 'a truncated or damaged zip archive'),
    }
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(content)
        path = str(tmp_path / name)
        with pytest.raises(CorruptCheckpointError) as info:
            load_checkpoint_file(path)
        assert str(info.value).startswith(f'corrupt or not a checkpoint: {path} ({what}')
        assert 'Traceback' not in str(info.value)
    torch.save(torch.zeros(3), tmp_path / 'tensor.pth')
    with pytest.raises(CheckpointMismatchError, match='holds a Tensor, not a checkpoint'):
        load_checkpoint_file(str(tmp_path / 'tensor.pth'))
    with pytest.raises(CheckpointMismatchError, match='is no training checkpoint'):
        load_checkpoint_file(str(good), training=True)


def test_checkpoints_of_another_kind_name_what_would_fit(tmp_path):
    clf = _classifier()
    # a torchvision state dict given to a classifier: the backbone's init_cfg
    tv = str(tmp_path / 'tv.pth')
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    with pytest.raises(CheckpointMismatchError) as info:
        load_strictly(clf, tv)
    assert str(info.value) == (
        f"{tv} is a bare backbone state dict (keys such as 'conv1.weight', no 'backbone.' "
        'prefix), not a checkpoint of this ImageClassifier: start training from it with '
        f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{tv}')")
    # the authors' ADN release (bare keys with *_skip and fc): the converter
    official = {
        **ResNetADN(depth=18).state_dict(), 'fc.weight': torch.zeros(4, 512),
        'fc.bias': torch.zeros(4)
    }
    torch.save(official, tmp_path / 'official.pth')
    with pytest.raises(CheckpointMismatchError, match='convert it with tools/model_converters/'
                       'adn_official_to_mmadn.py'):
        load_strictly(clf, str(tmp_path / 'official.pth'))
    # another classifier (10 classes) whose backbone fits: init_cfg with prefix
    other = _train_ckpt(tmp_path / 'other.pth', _classifier(num_classes=10),
                        experiment_name='digits_run')
    with pytest.raises(CheckpointMismatchError) as info:
        load_strictly(clf, other)
    assert "holds another model (run 'digits_run') whose backbone fits" in str(info.value)
    assert "prefix='backbone.')" in str(info.value)
    # an ADN checkpoint given to a plain-ResNet config: the ADN config it was trained with
    adn = _train_ckpt(tmp_path / 'adn.pth', clf, experiment_name='resnet18_adn_demo_1',
                      adn_backbone=adn_backbone_meta(clf))
    plain = _classifier(backbone_type='ResNet')
    for strict in (False, True):  # resumed (strict) or given as load_from
        with pytest.raises(CheckpointMismatchError) as info:
            check_checkpoint_fits(plain, torch.load(adn), adn, strict=strict)
        assert str(info.value).startswith(
            f'checkpoint {adn} was trained with ResNetADN(num_shared_blocks=(1, 1, 1, 1)) '
            "(run 'resnet18_adn_demo_1'), but this config builds the plain backbone ResNet: "
            'use the ADN config it was trained with')
    # and the checkpoint of this very model loads
    load_strictly(clf, adn)


def test_converter_refuses_an_mmadn_checkpoint(tmp_path):
    converter = load_tool('tools/model_converters/adn_official_to_mmadn.py')
    ckpt = _train_ckpt(tmp_path / 'iter_2.pth', _classifier(), mmengine_version='0.10.7')
    with pytest.raises(CheckpointMismatchError) as info:
        converter.convert(ckpt, str(tmp_path / 'out'))
    assert 'is already an mmadn (mmengine) checkpoint' in str(info.value)
    assert 'needs no conversion' in str(info.value) and not (tmp_path / 'out').exists()


@requires_allow_list
def test_converter_loads_safely(tmp_path):
    converter = load_tool('tools/model_converters/adn_official_to_mmadn.py')

    class Payload:

        def __reduce__(self):
            return eval, ('1 + 1', )

    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': Payload()}, tmp_path / 'evil.pth')
    with pytest.raises(mmadn.utils.checkpoint_safety.UnsafeCheckpointError) as info:
        converter.convert(str(tmp_path / 'evil.pth'), str(tmp_path / 'out'))
    assert 'builtins.eval' in str(info.value) and 'add_safe_globals' not in str(info.value)


# -- class 7 / 1: what --resume picks -------------------------------------------------------
def test_resume_candidates_skip_partial_and_broken_files(tmp_path):
    model = ResNetADN(depth=18)
    for step in (2, 4):
        _train_ckpt(tmp_path / f'iter_{step}.pth', model)
    # a write killed half-way: the temporary file, and a truncated iter_6.pth (as a plain
    # CheckpointHook would leave it); last_checkpoint points to the broken one
    data = (tmp_path / 'iter_4.pth').read_bytes()
    with open(temporary_path(str(tmp_path / 'iter_6.pth')), 'wb') as f:
        f.write(data[:1000])
    (tmp_path / 'iter_6.pth').write_bytes(data[:1000])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    path, found, refused = find_resume_checkpoint([str(tmp_path)])
    assert path == str(tmp_path / 'iter_4.pth')
    assert [osp.basename(p) for p in found] == ['iter_6.pth', 'iter_4.pth', 'iter_2.pth']
    assert 'corrupt or not a checkpoint' in refused[str(tmp_path / 'iter_6.pth')]
    os.remove(tmp_path / 'iter_4.pth')
    os.remove(tmp_path / 'iter_2.pth')
    assert find_resume_checkpoint([str(tmp_path)])[0] is None
