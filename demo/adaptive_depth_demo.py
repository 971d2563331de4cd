"""One image through several depths of one ADN detector, side by side.

    python demo/adaptive_depth_demo.py CONFIG CKPT IMAGE --skips FFFF,TTFF,TTTT \
        --out depths.png [--device cpu] [--score-thr 0.3] [--repeats 5]

The model is built and loaded once (mmdet's DetInferencer, loading strictly as
``tools/test.py`` does: a checkpoint that does not fit the config stops the demo); each
sub-network is reached with ``backbone.set_skip``. Every panel shows that depth's
detections (drawn by mmdet's visualizer) under a header with its skip and its latency: the
median over ``--repeats`` interleaved runs of the model on the preprocessed image
(``model.test_step``).
"""
import argparse
import os
import os.path as osp
import sys

import mmcv
import numpy as np
from mmdet.apis import DetInferencer

import mmadn  # noqa: F401
from mmadn.analysis import measure_latency
from mmadn.engine.launch import positive_int, skips_argument
from mmadn.models import (CHECKPOINT_ERRORS, CheckpointMismatchError, find_adn_backbone,
                          load_checkpoint_dict_strictly)
from mmadn.models.layers.skip import format_skip, resolve_skips


class StrictDetInferencer(DetInferencer):
    """mmdet's DetInferencer, but the weights must fit the model exactly (DetInferencer
    loads non-strictly: a checkpoint of another model would draw random heads)."""

    def _init_model(self, cfg, weights, device):
        self._weights = weights  # for the messages
        return super()._init_model(cfg, weights, device)

    def _load_weights_to_model(self, model, checkpoint, cfg):
        if checkpoint is None:
            raise CheckpointMismatchError('no checkpoint given: the demo needs trained weights')
        load_checkpoint_dict_strictly(model, checkpoint, self._weights)
        super()._load_weights_to_model(model, checkpoint, cfg)  # the dataset meta


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an ADN detector config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('image', help='the input image')
    parser.add_argument('--skips', default='FFFF,TTFF,TTTT', type=skips_argument,
                        help="comma-separated sub-networks, e.g. 'FFFF,TTFF,TTTT' or 'super,base'")
    parser.add_argument('--out', required=True, help='the picture to write (.png)')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections scoring at least this (default 0.3)')
    parser.add_argument('--repeats', type=positive_int, default=5,
                        help='timed runs per depth; the label shows the median (default 5)')
    return parser.parse_args(argv)


def header(vis, width: int, text: str) -> np.ndarray:
    """A white strip with ``text``, drawn with the inferencer's (mmdet) visualizer."""
    font = max(8, width // 20)
    strip = np.full((int(font * 2.2), width, 3), 255, dtype=np.uint8)
    vis.set_image(strip)
    vis.draw_texts(text, np.array([[font // 2, font // 2]]), colors='black', font_sizes=font)
    return vis.get_image()


def main(argv=None):
    args = parse_args(argv)
    for path in (args.config, args.checkpoint, args.image):
        if not osp.isfile(path):
            raise SystemExit(f'error: {path!r} does not exist')
    try:
        inferencer = StrictDetInferencer(model=args.config, weights=args.checkpoint,
                                         device=args.device, show_progress=False)
        backbone = find_adn_backbone(inferencer.model)
        skips = [format_skip(s) for s in resolve_skips(args.skips, backbone.num_skippable_stages)]
    except (TypeError, ValueError, *CHECKPOINT_ERRORS) as err:
        raise SystemExit(f'error: {err}') from None
    image = mmcv.imread(args.image, channel_order='rgb')
    _, data = next(iter(inferencer.preprocess(inferencer._inputs_to_list(image), batch_size=1)))
    latency = measure_latency({s: lambda: inferencer.model.test_step(data)
                               for s in skips}, warmup=1, repeats=args.repeats,
                              setup=backbone.set_skip)
    panels = []
    for skip in skips:
        backbone.set_skip(skip)
        result = inferencer(image, return_vis=True, no_save_vis=True, pred_score_thr=args.score_thr)
        drawn = result['visualization'][0]
        count = sum(s >= args.score_thr for s in result['predictions'][0]['scores'])
        ms = latency[skip]['median_ms']
        print(f'{skip}: {ms:.1f} ms (median of {args.repeats}), {count} detections >= '
              f'{args.score_thr}')
        panels.append(
            np.concatenate(
                [header(inferencer.visualizer, drawn.shape[1], f'{skip}  {ms:.1f} ms'), drawn]))
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    mmcv.imwrite(mmcv.rgb2bgr(np.concatenate(panels, axis=1)), args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
