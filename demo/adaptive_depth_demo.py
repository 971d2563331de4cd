"""One image through several depths of one ADN detector, side by side.

    python demo/adaptive_depth_demo.py CONFIG CKPT IMAGE --skips FFFF,TTFF,TTTT \
        --out depths.png [--device cpu] [--score-thr 0.3] [--repeats 5]

The model is built and loaded once (mmdet's DetInferencer, loading strictly as
``tools/test.py`` does: a checkpoint that does not fit the config stops the demo); each
sub-network is reached with ``backbone.set_skip``. Every panel shows that depth's
detections scoring at least ``--score-thr`` (drawn by mmdet's visualizer on a copy of the
image upscaled to ``--min-size``) under a title with its skip, its latency (the median over
``--repeats`` interleaved runs of the model on the preprocessed image, ``model.test_step``)
and, given ``--results``, its bbox mAP.
"""
import argparse
import os
import os.path as osp
import sys

import mmcv
import numpy as np
import torch

import mmadn  # noqa: F401
from mmadn.analysis import load_accuracy, measure_latency
from mmadn.engine.launch import check_output_path, positive_int, skips_argument
from mmadn.models import CHECKPOINT_ERRORS, find_adn_backbone
from mmadn.models.layers.skip import format_skip, resolve_skips
from mmadn.runtime.inferencer import StrictDetInferencer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an ADN detector config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('image', help='the input image')
    parser.add_argument('--skips', default='FFFF,TTFF,TTTT', type=skips_argument,
                        help="comma-separated sub-networks, e.g. 'FFFF,TTFF,TTTT' or 'super,base'")
    parser.add_argument('--out', required=True, help='the picture to write (.png)')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument(
        '--score-thr', type=float, default=0.5,
        help='draw detections scoring at least this (default 0.5: the '
        'confident ones)')
    parser.add_argument(
        '--min-size', type=positive_int, default=384,
        help='upscale the image so that its shorter side has at least this '
        'many pixels before drawing (default 384)')
    parser.add_argument(
        '--results', help="subnet_results.json of 'tools/test.py --skip': "
        "each panel's title adds that sub-network's bbox mAP")
    parser.add_argument('--repeats', type=positive_int, default=5,
                        help='timed runs per depth; the label shows the median (default 5)')
    return parser.parse_args(argv)


def header(vis, width: int, text: str) -> np.ndarray:
    """A white strip with ``text``, drawn with the inferencer's (mmdet) visualizer; the font
    is sized for the text to fit the width, taking a character as 0.8 font sizes wide (the
    demo's test checks that its titles fit)."""
    font = max(8, min(width // 20, int((width - width // 40) / (0.8 * max(1, len(text))))))
    strip = np.full((int(font * 2.2), width, 3), 255, dtype=np.uint8)
    vis.set_image(strip)
    vis.draw_texts(text, np.array([[font // 2, font // 2]]), colors='black', font_sizes=font)
    return vis.get_image()


def main(argv=None):
    args = parse_args(argv)
    for path in (args.config, args.checkpoint, args.image, args.results):
        if path is not None and not osp.isfile(path):
            raise SystemExit(f'error: {path!r} does not exist')
    try:
        check_output_path(args.out, '--out', ('.png', '.jpg'), inputs=[args.image])
        mean_ap = load_accuracy(args.results, 'coco/bbox_mAP')[0] if args.results else {}
        inferencer = StrictDetInferencer(model=args.config, weights=args.checkpoint,
                                         device=args.device, show_progress=False)
        backbone = find_adn_backbone(inferencer.model)
        skips = [format_skip(s) for s in resolve_skips(args.skips, backbone.num_skippable_stages)]
    except (TypeError, ValueError, *CHECKPOINT_ERRORS) as err:
        raise SystemExit(f'error: {err}') from None
    image = mmcv.imread(args.image, channel_order='rgb')
    if image is None:
        raise SystemExit(f'error: {args.image} is not a readable image')
    _, data = next(iter(inferencer.preprocess(inferencer._inputs_to_list(image), batch_size=1)))
    latency = measure_latency({s: lambda: inferencer.model.test_step(data)
                               for s in skips}, warmup=1, repeats=args.repeats,
                              setup=backbone.set_skip)
    # drawn on an upscaled copy (boxes and labels readable on a small image); the model
    # sees the image itself, and the boxes are scaled to the copy
    scale = max(1.0, args.min_size / min(image.shape[:2]))
    big = mmcv.imrescale(image, scale, interpolation='nearest')
    panels = []
    for skip in skips:
        backbone.set_skip(skip)
        result = inferencer(image, return_datasamples=True, no_save_pred=True)
        sample = result['predictions'][0]
        keep = sample.pred_instances[sample.pred_instances.scores >= args.score_thr]
        keep.bboxes = keep.bboxes * scale
        if 'masks' in keep:
            keep.masks = torch.nn.functional.interpolate(keep.masks[:, None].float(),
                                                         size=big.shape[:2])[:, 0] > 0.5
        sample.pred_instances = keep
        inferencer.visualizer.add_datasample('panel', big, sample, draw_gt=False, show=False,
                                             pred_score_thr=0)
        drawn = inferencer.visualizer.get_image()
        ms = latency[skip]['median_ms']
        title = f'{skip}  {ms:.1f} ms'
        if skip in mean_ap:
            title += f'  bbox mAP {mean_ap[skip]:.3f}'
        print(f'{skip}: {ms:.1f} ms (median of {args.repeats}), {len(keep)} detections >= '
              f'{args.score_thr}' + (f', bbox mAP {mean_ap[skip]:.3f}' if skip in mean_ap else ''))
        panels.append(np.concatenate([header(inferencer.visualizer, drawn.shape[1], title), drawn]))
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    mmcv.imwrite(mmcv.rgb2bgr(np.concatenate(panels, axis=1)), args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
