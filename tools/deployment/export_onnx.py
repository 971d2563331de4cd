"""Export a chosen sub-network, or every depth in one file, to ONNX and check it with
onnxruntime (CPU).

    python tools/deployment/export_onnx.py CONFIG CKPT --skip TTFF --out model.onnx
        [--shape H W] [--atol 1e-4] [--cfg-options ...]
    python tools/deployment/export_onnx.py CONFIG CKPT --skip dynamic --out model.onnx
        [--shape H W] [--dynamic-hw]

``--skip dynamic`` writes one file for every depth: a second input ``skip`` (bool, one flag
per skippable stage, True = the stage skips its skippable blocks) chooses the depth at run
time, each stage is an ONNX ``If`` between its two sub-paths and every weight is stored once;
the file is checked against the model at every depth. ``--dynamic-hw`` lets H and W be any
multiple of 32 (a detector's padded images). ``mmadn.runtime.OnnxDepthModel`` runs it with
``set_skip``.

CONFIG may be an ADN config (the sub-network ``--skip`` is turned into its static model
first, as tools/deployment/export_subnet.py does) or an already exported static config.
The graph takes the normalized image batch (1 x 3 x H x W, after the data preprocessor):
a classifier is exported whole (output ``logits``), a detector's backbone + neck (outputs
``feat0`` ... one per feature level; heads and post-processing stay in torch).
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

import mmadn  # noqa: F401
from mmadn.analysis import profile_subnets
from mmadn.deploy import (build_model, dynamic_depth_backbone, export_onnx, export_onnx_dynamic,
                          export_static, onnx_dynamic_max_abs_diff, onnx_max_abs_diff)
from mmadn.engine.launch import check_output_path
from mmadn.models import find_adn_backbone
from mmadn.utils.torch_compat import dynamic_onnx_export_support


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an ADN config or an exported static config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument(
        '--skip', help="the sub-network of an ADN model: 'TTFF', 'super' or "
        "'base' (default: the config's model.backbone.skip), or 'dynamic': every depth in "
        'one file, the depth an input')
    parser.add_argument('--dynamic-hw', action='store_true',
                        help='with --skip dynamic: H and W any multiple of 32')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input height and width (default 224 224)')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest allowed onnxruntime-torch difference (default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG')
    return parser.parse_args(argv)


def static_model(cfg: Config, checkpoint: str, skip):
    """The model to export (static) and the torch model it is checked against."""
    model, _ = build_model(cfg, checkpoint)
    backbone = find_adn_backbone(model, required=False)
    if backbone is None:
        if skip is not None:
            find_adn_backbone(model, user=f'--skip {skip}')  # raises, naming the backbone
        return model, model, None
    skip = backbone.skip if skip is None else skip
    static_cfg, state = export_static(cfg, model, skip)
    static, _ = build_model(static_cfg)
    static.load_state_dict(state, strict=True)
    backbone.set_skip(skip)
    return static, model, backbone.skip_str


def export_dynamic(cfg: Config, args) -> int:
    """``--skip dynamic``: one file for every depth, checked at every depth."""
    reason = dynamic_onnx_export_support()
    if reason:
        print(f'error: {reason}', file=sys.stderr)
        return 1
    model, _ = build_model(cfg, args.checkpoint)
    try:
        backbone = dynamic_depth_backbone(model, user='--skip dynamic')
        if args.dynamic_hw and any(s % 32 for s in args.shape):
            raise ValueError(f'--shape {args.shape[0]} {args.shape[1]} with --dynamic-hw: '
                             'expected multiples of 32')
    except (ValueError, NotImplementedError, TypeError) as err:
        raise SystemExit(f'error: {err}') from None
    torch.manual_seed(0)
    inputs = torch.randn(1, 3, *args.shape)
    gflops = {r['skip']: r['gflops'] for r in profile_subnets(model, inputs, latency=False)}
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    names = export_onnx_dynamic(model, args.out, tuple(args.shape), opset=args.opset, gflops=gflops,
                                dynamic_hw=args.dynamic_hw)
    diffs = onnx_dynamic_max_abs_diff(args.out, model, inputs)
    worst = max(diffs, key=diffs.get)
    n = backbone.num_skippable_stages
    hw = 'HxW (multiples of 32)' if args.dynamic_hw else f'{args.shape[0]}x{args.shape[1]}'
    print(f'wrote {args.out} (every depth; inputs input 1x3x{hw}, skip '
          f'bool[{n}]; outputs {", ".join(names)}; {osp.getsize(args.out) / 2**20:.2f} MiB)')
    print(f'  max |onnxruntime - torch| over the {len(diffs)} depths = {diffs[worst]:.3g} '
          f'(at {worst})')
    if diffs[worst] > args.atol:
        print(f'error: onnxruntime differs from torch by more than {args.atol}', file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        for path in (args.config, args.checkpoint):
            if not osp.isfile(path):
                raise ValueError(f'{path!r} does not exist')
        check_output_path(args.out, '--out', ('.onnx', ), inputs=[args.checkpoint])
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.skip is not None and args.skip.strip().lower() == 'dynamic':
        return export_dynamic(cfg, args)
    if args.dynamic_hw:
        raise SystemExit('error: --dynamic-hw goes with --skip dynamic')
    try:
        static, reference, skip = static_model(cfg, args.checkpoint, args.skip)
    except (ValueError, NotImplementedError, TypeError) as err:
        raise SystemExit(f'error: {err}') from None
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    names = export_onnx(static, args.out, tuple(args.shape), opset=args.opset)
    torch.manual_seed(0)
    inputs = torch.randn(1, 3, *args.shape)
    diff = onnx_max_abs_diff(args.out, reference, inputs)
    what = f'sub-network {skip}' if skip else 'the static model'
    print(f'wrote {args.out} ({what}; input 1x3x{args.shape[0]}x{args.shape[1]}, outputs '
          f'{", ".join(names)})')
    print(f'  max |onnxruntime - torch| = {diff:.3g}')
    if diff > args.atol:
        print(f'error: onnxruntime differs from torch by more than {args.atol}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
