"""Export one sub-network of an ADN model as a plain static model (config + checkpoint).

    python tools/deployment/export_subnet.py CONFIG CKPT --skip TTFF --out DIR
        [--shape H W] [--atol 1e-5] [--cfg-options ...]

Writes DIR/<config name>_<skip>.py and .pth: the skipped blocks are gone and the skip-aware
norms in use sit in the ordinary norm slots (backbone: StageResNet, or mmdet's CSPNeXt /
CSPDarknet; a skippable neck: its blocks of that depth, nothing to skip). The written files are
then loaded back as a user would and checked against the adaptive model at that skip on a
random input (classifier: logits; detector: backbone + neck features).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

import mmadn  # noqa: F401
from mmadn.analysis import count_active_params
from mmadn.deploy import build_model, export_subnet, max_abs_diff, num_params, tensor_forward
from mmadn.engine.launch import check_output_path
from mmadn.models.layers.skip import check_skip_form


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the ADN model config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('--skip', required=True,
                        help="the sub-network: 'TTFF' (T = that stage skips), 'super' or 'base'")
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input size of the check (default 224 224)')
    parser.add_argument('--atol', type=float, default=1e-5,
                        help='largest allowed output difference (default 1e-5)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        for path in (args.config, args.checkpoint):
            if not osp.isfile(path):
                raise ValueError(f'{path!r} does not exist')
        check_skip_form(args.skip, '--skip')
        check_output_path(args.out, '--out', folder=True)
        result = export_subnet(args.config, args.checkpoint, args.skip, args.out, args.cfg_options)
    except (ValueError, NotImplementedError, TypeError) as err:
        raise SystemExit(f'error: {err}') from None
    skip, adaptive = result['skip'], result['adaptive_model']
    static, _ = build_model(Config.fromfile(result['config']), result['checkpoint'])
    torch.manual_seed(0)
    inputs = torch.randn(1, 3, *args.shape)
    backbone = adaptive.backbone
    neck = getattr(backbone, 'adn_neck', None)  # a skippable neck, exported with it
    with backbone.skipping(skip):
        diff = max_abs_diff(adaptive, static, inputs)
        active = count_active_params(adaptive, inputs, tensor_forward(adaptive))
        active_backbone = count_active_params(backbone, inputs)
        unused = num_params(backbone) - active_backbone  # skipped blocks + unused norm set
        if neck is not None:
            with torch.no_grad():
                feats = backbone(inputs)
            unused += num_params(neck) - count_active_params(neck, (feats, ))
    print(f'exported sub-network {skip}: stage blocks '
          f'{tuple(backbone.static_stage_blocks(skip))}')
    print(f'  config:     {result["config"]}')
    print(f'  checkpoint: {result["checkpoint"]}')
    print(f'  parameters: static model {num_params(static):,} (backbone '
          f'{num_params(static.backbone):,}); adaptive model {num_params(adaptive):,}, of '
          f'which sub-network {skip} uses {num_params(adaptive) - unused:,} (backbone '
          f'{active_backbone:,}; tensor forward {active:,})')
    print(f'  max |static - adaptive({skip})| = {diff:.3g} on a 1x3x{args.shape[0]}x'
          f'{args.shape[1]} input')
    ok = diff <= args.atol and num_params(static) == num_params(adaptive) - unused
    if not ok:
        print(f'error: the static model does not match sub-network {skip} '
              f'(atol {args.atol})', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
