"""Convert the authors' released ResNet-ADN state dicts into mmadn checkpoints.

    python tools/model_converters/adn_official_to_mmadn.py SRC OUT_DIR [--name NAME]

SRC is a bare state dict (torchvision layout plus ``layerX.Y.bn{1,2,3}_skip.*`` keys; the
'd' layout with ``downsample.1`` / ``downsample.2`` and a deep stem, named as timm's
ResNet-D does (``conv1.0/1/3/4/6`` + ``bn1``) or as mmdet's (``stem.*``), are recognised
too; any other layout is refused with one line), possibly wrapped in
``{'state_dict': ...}`` / ``{'model': ...}`` or with DDP's ``module.`` prefix. Writes

* ``OUT_DIR/NAME_in1k.pth``: an mmpretrain ImageClassifier checkpoint
  (``backbone.*`` + ``head.fc.*``), for ``configs/imagenet/resnet*_adn_*.py``;
* ``OUT_DIR/NAME_backbone.pth``: backbone-only weights for detection configs
  (``init_cfg=dict(type='Pretrained', checkpoint=...)``).

Both are checked by loading them into ResNetADN of the detected depth (strictly).
"""
import argparse
import os
import os.path as osp
import re
from collections import OrderedDict

import torch

import mmadn  # noqa: F401  (checkpoint loading rules)
from mmadn.engine.launch import check_output_path
from mmadn.models import (CHECKPOINT_ERRORS, CheckpointMismatchError, adn_backbone_meta,
                          load_checkpoint_file)
from mmadn.models.backbones import ResNetADN
from mmadn.utils.fileio import replace_atomically, temporary_path

BLOCKS_TO_DEPTH = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}


def refuse_converted(obj, src) -> None:
    """An mmadn / mmengine checkpoint needs no conversion: say how to use it instead."""
    state = obj.get('state_dict') if isinstance(obj, dict) else None
    keys = list(state) if isinstance(state, dict) else []
    if any(k.startswith(('backbone.', 'module.backbone.'))
           for k in keys) or (isinstance(obj.get('meta'), dict)
                              and 'mmengine_version' in obj['meta']):
        raise CheckpointMismatchError(
            f"{src} is already an mmadn (mmengine) checkpoint (keys such as {keys[0]!r}"
            f"{', written by training' if 'message_hub' in obj else ''}): it needs no "
            'conversion; test it with tools/test.py CONFIG ' + src + ', or start a detector '
            "from its backbone with model.backbone.init_cfg=dict(type='Pretrained', "
            f"checkpoint='{src}', prefix='backbone.')")


def unwrap(obj):
    for key in ('state_dict', 'model', 'model_state'):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ValueError('expected a state dict (a mapping of names to tensors)')
    return OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in obj.items())


def detect_arch(state):
    blocks, bottleneck = {}, False
    for key in state:
        m = re.match(r'layer(\d)\.(\d+)\.(conv\d)\.weight$', key)
        if m:
            stage, idx = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), idx + 1)
            bottleneck |= m.group(3) == 'conv3'
    counts = tuple(blocks.get(i, 0) for i in range(1, 5))
    depth = BLOCKS_TO_DEPTH.get((counts, bottleneck))
    if depth is None:
        raise ValueError(f'not a ResNet(-ADN) state dict: found {counts} blocks per stage '
                         f'({"Bottleneck" if bottleneck else "BasicBlock"}); expected the '
                         'block counts of ResNet-18/34/50/101/152')
    avg_down = any(re.match(r'layer\d\.0\.downsample\.2\.weight$', k) for k in state)
    has_skip = any('_skip.' in k for k in state)
    deep_stem = 'conv1.0.weight' in state or 'stem.0.weight' in state
    if not deep_stem and 'conv1.weight' not in state:
        stem = sorted(k for k in state if not k.startswith(('layer', 'fc.')))[:3]
        raise ValueError(f'unsupported stem layout (keys such as {stem}): expected the '
                         "torchvision stem ('conv1.weight', 'bn1.*') or a deep stem "
                         "('conv1.0/1/3/4/6' + 'bn1', as timm's ResNet-D, or mmdet's 'stem.*')")
    return depth, avg_down, has_skip, deep_stem


#: a deep stem as timm's ResNet-D names it -> as mmdet's ResNet(deep_stem=True) does
DEEP_STEM = {
    'conv1.0.': 'stem.0.',
    'conv1.1.': 'stem.1.',
    'conv1.3.': 'stem.3.',
    'conv1.4.': 'stem.4.',
    'conv1.6.': 'stem.6.',
    'bn1.': 'stem.7.'
}


def deep_stem_keys(state):
    """``state`` with a timm-style deep stem renamed to mmdet's ``stem.*`` keys."""
    renamed = OrderedDict()
    for key, value in state.items():
        old = next((o for o in DEEP_STEM if key.startswith(o)), None)
        renamed[DEEP_STEM[old] + key[len(old):] if old else key] = value
    return renamed


def convert(src, out_dir, name=None):
    # the same safe loader as everything else (weights_only, refusals explained)
    obj = load_checkpoint_file(src)
    refuse_converted(obj, src)
    state = unwrap(obj)
    depth, avg_down, has_skip, deep_stem = detect_arch(state)
    if deep_stem:
        state = deep_stem_keys(state)
    backbone = OrderedDict((k, v) for k, v in state.items() if not k.startswith('fc.'))
    model = ResNetADN(depth=depth, avg_down=avg_down, deep_stem=deep_stem)
    try:  # fills missing skip norms, checks keys and shapes
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as err:
        raise ValueError(f'{src} does not convert to ResNet-{depth}-ADN: ' +
                         ' '.join(str(err).split())[:400]) from None
    backbone = model.state_dict()
    classifier = OrderedDict(('backbone.' + k, v) for k, v in backbone.items())
    if 'fc.weight' in state:
        classifier['head.fc.weight'] = state['fc.weight']
        classifier['head.fc.bias'] = state['fc.bias']
    name = name or f'resnet{depth}{"d" if avg_down else ""}_adn'
    os.makedirs(out_dir, exist_ok=True)
    meta = dict(source=osp.basename(src), depth=depth, avg_down=avg_down, deep_stem=deep_stem,
                had_skip_norms=has_skip, adn_backbone=adn_backbone_meta(model))
    paths = dict(classifier=osp.join(out_dir, f'{name}_in1k.pth'),
                 backbone=osp.join(out_dir, f'{name}_backbone.pth'))
    for kind, state_dict in (('classifier', classifier), ('backbone', backbone)):
        tmp = temporary_path(paths[kind])  # written whole or not at all
        torch.save(dict(state_dict=state_dict, meta=meta), tmp)
        replace_atomically(tmp, paths[kind])
    return paths, meta


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="the authors' state dict (.pth)")
    parser.add_argument('out_dir', help='where to write the converted checkpoints')
    parser.add_argument('--name', help='file name stem (default: resnet{depth}[d]_adn)')
    args = parser.parse_args()
    try:
        check_output_path(args.out_dir, 'OUT_DIR', folder=True, inputs=[args.src])
        paths, meta = convert(args.src, args.out_dir, args.name)
    except (FileNotFoundError, ValueError, *CHECKPOINT_ERRORS) as err:
        raise SystemExit(f'error: {err}') from None
    print(f"ResNet-{meta['depth']}{'d' if meta['avg_down'] else ''}"
          f"{' (deep stem)' if meta['deep_stem'] else ''}-ADN "
          f"(skip norms {'found' if meta['had_skip_norms'] else 'copied from partners'})")
    for kind, path in paths.items():
        print(f'{kind:>10}: {path}')


if __name__ == '__main__':
    main()
