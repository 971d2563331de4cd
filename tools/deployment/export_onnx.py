"""Export a chosen sub-network to ONNX and check it with onnxruntime (CPU).

    python tools/deployment/export_onnx.py CONFIG CKPT --skip TTFF --out model.onnx
        [--shape H W] [--atol 1e-4] [--cfg-options ...]

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
from mmadn.deploy import build_model, export_onnx, export_static, onnx_max_abs_diff
from mmadn.engine.launch import check_output_path
from mmadn.models import find_adn_backbone


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an ADN config or an exported static config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument(
        '--skip', help="the sub-network of an ADN model: 'TTFF', 'super' or "
        "'base' (default: the config's model.backbone.skip)")
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
