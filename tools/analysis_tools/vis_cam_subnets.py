"""What each depth of an ADN model looks at: per-block maps of one stage, per sub-network.

    python tools/analysis_tools/vis_cam_subnets.py CONFIG CHECKPOINT IMG_OR_DIR
        [--skips FFFF,TTFF,TTTT] [--stage 3 | --blocks layer3.0,layer3.5]
        [--method gradcam|actnorm] [--target-class N|NAME] [--out FILE.png|DIR]
        [--device cpu|cuda] [--score-thr 0.3] [--cfg-options ...]

One figure per image: a row per sub-network, the input, one map per block of the stage
(``--stage`` is 1-based: 3 is ``layer3``, the paper's third stage; a skipped block is grey),
and the row's prediction. A classifier's maps are Grad-CAM (the grad-cam package) of one
class for every row: ``--target-class``, else the first sub-network's prediction. A
detector has no single class score: its maps are the activation norm (L2 over channels) of
each block's output, and the figure says so. Each map is scaled to [0, 1] on its own.
The model is built and loaded once; the depth is switched with ``backbone.set_skip``.
A folder gives one figure per image, ``DIR/<image name>_cam.png``.
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.runner import load_checkpoint

import mmadn  # noqa: F401
from mmadn.analysis.cam import (METHODS, class_names_of, load_image, model_task, plot_subnet_maps,
                                resolve_blocks, subnet_maps)
from mmadn.engine.launch import check_output_path, load_config
from mmadn.models import build_model, find_adn_backbone
from mmadn.models.layers.skip import resolve_skips

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-block activation maps of one stage for several sub-networks')
    parser.add_argument('config', help='an ADN classifier or detector config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('img', help='an image, or a folder of images')
    parser.add_argument('--skips', default='FFFF,TTFF,TTTT',
                        help="comma-separated sub-networks, one row each (or 'all')")
    parser.add_argument('--stage', default='3',
                        help='1-based stage whose blocks are the columns (3: layer3)')
    parser.add_argument('--blocks', help='block names instead of --stage, e.g. '
                        'layer3.0,layer3.5')
    parser.add_argument(
        '--method', choices=METHODS,
        help='gradcam (classifiers, their default) or actnorm (activation '
        'norm; the only one for detectors)')
    parser.add_argument(
        '--target-class', help='class index or name that Grad-CAM explains '
        '(default: the first sub-network\'s prediction)')
    parser.add_argument(
        '--out', help='the figure (.png) for one image, or a folder; default '
        'work_dirs/vis_cam_subnets/<image name>_cam.png')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda'")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help="a detector's detections drawn (default 0.3)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def _fail(msg: str):
    raise SystemExit(f'error: {msg}')


def _first_line(err: Exception) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return f'{type(err).__name__}: {lines[0] if lines else ""}'


def list_images(path: str):
    if osp.isdir(path):
        imgs = sorted(osp.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMG_EXTS))
        if not imgs:
            _fail(f'{path!r} holds no image ({", ".join(IMG_EXTS)})')
        return imgs
    if not osp.isfile(path):
        _fail(f'image {path!r} does not exist (expected an image file or a folder)')
    return [path]


def out_path(out, img: str, many: bool) -> str:
    name = osp.splitext(osp.basename(img))[0] + '_cam.png'
    if out is None:
        return osp.join('work_dirs', 'vis_cam_subnets', name)
    if many or not out.lower().endswith(('.png', '.jpg', '.jpeg', '.pdf', '.svg')):
        return osp.join(out, name)
    return out


def parse_stage(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        _fail(f'--stage {text!r}: expected a 1-based stage number (3 is layer3)')


def parse_target(text, names):
    if text is None:
        return None
    if text.lstrip('-').isdigit():
        return int(text)
    if names and text in names:
        return list(names).index(text)
    known = f'one of {", ".join(map(str, names))}' if names else 'a class index'
    _fail(f'--target-class {text!r}: expected {known}')


def main(argv=None):
    args = parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        _fail(f'--device {args.device}: no CUDA device is available here; use --device cpu')
    try:
        cfg = load_config(args.config, args.cfg_options)
    except FileNotFoundError as err:
        _fail(str(err))
    if not osp.isfile(args.checkpoint):
        _fail(f'checkpoint {args.checkpoint!r} does not exist')
    images = list_images(args.img)
    if args.out is not None:
        many = out_path(args.out, images[0], len(images) > 1) != args.out
        try:
            check_output_path(args.out, '--out', folder=many, inputs=images)
        except ValueError as err:
            _fail(str(err))
    try:
        model, _ = build_model(cfg)
    except Exception as err:  # a config error: one line, not the registry's traceback
        _fail(f'building the model failed: {_first_line(err)}')
    blocks = [b.strip() for b in args.blocks.split(',') if b.strip()] if args.blocks else None
    stage = parse_stage(args.stage)
    try:
        task = model_task(model)
        backbone = find_adn_backbone(model)
        names, _ = resolve_blocks(backbone, stage, blocks)
        skips = resolve_skips(args.skips, backbone.num_skippable_stages)
        if args.method == 'gradcam' and task == 'detector':
            raise ValueError('--method gradcam needs a class score to explain and a detector '
                             'has none: its maps are the activation norm (--method actnorm)')
    except (TypeError, ValueError) as err:
        _fail(str(err))
    try:
        ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                               logger='silent')
    except Exception as err:
        _fail(f'loading {args.checkpoint!r} failed: {_first_line(err)}')
    model = model.to(args.device).eval()
    class_names = class_names_of(cfg, dict(ckpt.get('meta') or {}))
    target = parse_target(args.target_class, class_names)
    results = []
    for img in images:
        data = load_image(cfg, img)
        try:
            result = subnet_maps(model, data, skips, stage, blocks, args.method, target,
                                 class_names, score_thr=args.score_thr)
        except ValueError as err:
            _fail(str(err))
        path = out_path(args.out, img, len(images) > 1)
        plot_subnet_maps(result, path)
        what = ('Grad-CAM of class ' + repr(result.class_name(result.target_class))
                if result.method == 'gradcam' else 'activation norm')
        print(f'{osp.basename(img)}: {what} at {", ".join(names)}')
        for skip, pred in zip(result.skips, result.predictions):
            if task == 'classifier':
                line = (f'  {skip}: predicts {result.class_name(pred["label"])!r} '
                        f'({pred["score"]:.3f})')
                if pred['target_score'] is not None:
                    line += f', p(target) {pred["target_score"]:.3f}'
            else:
                line = f'  {skip}: {len(pred["labels"])} detections >= {args.score_thr:g}'
            print(line)
        print(f'wrote {path}')
        results.append(result)
    return results


if __name__ == '__main__':
    main()
    sys.exit(0)
