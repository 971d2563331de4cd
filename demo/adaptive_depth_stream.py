"""A stream of images through an ADN detector whose depth follows a latency budget.

    python demo/adaptive_depth_stream.py CONFIG CKPT SOURCE --budget-ms 80 \
        [--out stream.png] [--log stream.json] [--profile PROFILE.json] \
        [--results subnet_results.json] [--skips all] [--loop 1] [--max-frames N] \
        [--device cpu] [--score-thr 0.3] [--onnx BACKBONE_NECK.onnx]

SOURCE is a folder of images (read in name order; an image that does not decode is skipped
with a warning naming it) or a video file (its frames, read with mmcv). The detector
(mmdet's DetInferencer, loading the checkpoint strictly: one that does not fit the config
stops the demo) is built once; its sub-networks are profiled
(or the ``--profile`` of ``tools/analysis_tools/profile_subnets.py`` is read), timed once
more through the inferencer call, and a ``mmadn.runtime.DepthController`` chooses the depth
of every frame. Each frame's depth, latency and detection count are printed; the PNG shows
latency and depth over time.

``--onnx FILE`` runs the backbone + neck from the dynamic-depth ONNX file of this detector
(``tools/deployment/export_onnx.py CONFIG CKPT --skip dynamic --dynamic-hw``) on ONNX
Runtime (CPU): the controller switches the depth through the file's ``skip`` input; the heads
and the pre- and post-processing stay in PyTorch. The profile then comes from the session
(its latency per depth; GFLOPs written in the file).
"""
import argparse
import glob
import itertools
import json
import os
import os.path as osp
import sys

import mmcv

import mmadn  # noqa: F401
from mmadn.analysis import profile_subnets
from mmadn.models import CHECKPOINT_ERRORS, find_adn_backbone
from mmadn.models.layers.skip import resolve_skips
from mmadn.runtime import DepthController, OnnxDepthModel, plot_controller_log
from mmadn.runtime.inferencer import StrictDetInferencer
from mmadn.utils.fileio import read_json

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='an ADN detector config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('source', help='a folder of images or a video file')
    parser.add_argument('--budget-ms', type=float, required=True,
                        help='latency budget of one frame (the whole inferencer call), ms')
    parser.add_argument('--out', default='stream.png', help='the plot to write (.png)')
    parser.add_argument('--log', help='also write the per-frame log (time, latency, skip) '
                        'as JSON')
    parser.add_argument(
        '--profile', help='a profile .json of profile_subnets.py (default: '
        'profile here, on the first frame)')
    parser.add_argument(
        '--results', help='subnet_results.json of tools/test.py --skip: '
        'move along the most accurate sub-networks')
    parser.add_argument('--skips', default='all',
                        help="sub-networks to profile: 'all' or e.g. FFFF,TTFF,TTTT")
    parser.add_argument('--loop', type=int, default=1, help='pass over the source this '
                        'many times (default 1)')
    parser.add_argument('--max-frames', type=int, help='stop after this many frames')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument(
        '--onnx', help='run the backbone + neck from this dynamic-depth ONNX '
        'file (export_onnx.py --skip dynamic --dynamic-hw) on ONNX Runtime')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='count detections scoring at least this (default 0.3)')
    return parser.parse_args(argv)


def _read_images(files):
    """The images of ``files`` (BGR arrays); an image that does not decode is skipped
    with a warning naming it."""
    for path in files:
        try:
            image = mmcv.imread(path)
        except (OSError, ValueError) as err:  # unreadable file
            image, why = None, str(err)
        else:
            why = 'not a readable image'
        if image is None:
            print(f'WARNING: skipping {path}: {why}', file=sys.stderr, flush=True)
            continue
        yield image


def open_stream(source: str):
    """The frames of ``source`` (BGR arrays) and how many there are."""
    if osp.isdir(source):
        files = sorted(f for f in glob.glob(osp.join(source, '*'))
                       if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise SystemExit(f'error: the folder {source!r} holds no image '
                             f'({", ".join(IMAGE_EXTS)})')
        return _read_images(files), len(files)
    if not osp.isfile(source):
        raise SystemExit(f'error: {source!r} does not exist (expected a folder of images '
                         'or a video file)')
    video = mmcv.VideoReader(source)
    if not video.opened or video.frame_cnt < 1:
        raise SystemExit(f'error: {source!r} is not a readable video (expected a folder of '
                         'images or a video file that OpenCV opens)')
    return iter(video), video.frame_cnt


def frames_of(args):
    """Up to ``--max-frames`` frames, ``--loop`` passes over the source."""
    count = 0
    for _ in range(args.loop):
        frames, _ = open_stream(args.source)
        for frame in frames:
            if frame is None:  # a video's reader gives None at its end
                break
            if args.max_frames is not None and count >= args.max_frames:
                return
            count += 1
            yield frame


def onnx_backbone_neck(model, onnx_file: str) -> OnnxDepthModel:
    """Run ``model``'s backbone + neck from ``onnx_file`` (a dynamic-depth file of this
    detector): ``model.extract_feat`` becomes the session's call, at the session's depth."""
    session = OnnxDepthModel(onnx_file)
    n = find_adn_backbone(model).num_skippable_stages
    if session.scope != 'backbone+neck' or session.num_skippable_stages != n:
        raise ValueError(f'--onnx {onnx_file}: a {session.scope!r} with '
                         f'{session.num_skippable_stages} skippable stages; expected the '
                         f"backbone + neck of this detector ({n} stages, export_onnx.py "
                         '--skip dynamic --dynamic-hw)')
    device = next(model.parameters()).device
    model.extract_feat = lambda inputs: tuple(o.to(device) for o in session(inputs))
    return session


def main(argv=None):
    args = parse_args(argv)
    for path in (args.config, args.checkpoint, args.profile, args.results, args.onnx):
        if path is not None and not osp.isfile(path):
            raise SystemExit(f'error: {path!r} does not exist')
    if args.loop < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise SystemExit(f'error: --loop {args.loop} / --max-frames {args.max_frames}: '
                         'expected integers >= 1')
    open_stream(args.source)  # a bad source fails before the model is built
    try:
        inferencer = StrictDetInferencer(model=args.config, weights=args.checkpoint,
                                         device=args.device, show_progress=False)
    except (ValueError, *CHECKPOINT_ERRORS) as err:  # the weights do not fit the config
        raise SystemExit(f'error: {err}') from None
    model = inferencer.model
    try:
        backbone = find_adn_backbone(model)
        skips = resolve_skips(args.skips, backbone.num_skippable_stages)
        session = onnx_backbone_neck(model, args.onnx) if args.onnx else None
    except (TypeError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    frames = frames_of(args)
    first = next(frames, None)
    if first is None:
        raise SystemExit(f'error: no frame could be read from {args.source!r}')
    if args.profile is not None:
        try:
            profile = read_json(args.profile, 'the .json of profile_subnets.py')
        except ValueError as err:
            raise SystemExit(f'error: --profile {err}') from None
    else:
        _, data = next(iter(inferencer.preprocess(inferencer._inputs_to_list(first), batch_size=1)))
        inputs = model.data_preprocessor(data, False)['inputs']
        if session is not None:
            profile = session.profile(inputs, skips=skips, warmup=1, repeats=3)
        else:
            profile = profile_subnets(model, inputs, skips=skips, warmup=1, repeats=3)
        print('profiled ' + ', '.join(f"{r['skip']} {r['latency_ms']:.1f} ms"
                                      for r in profile) + f" ({profile[0]['scope']})")
    call = dict(return_datasamples=True, no_save_pred=True)
    try:
        ctrl = DepthController(inferencer, profile, args.budget_ms, accuracy=args.results,
                               switch=None if session is None else session.set_skip)
        measured = ctrl.calibrate(first, **call)
    except (TypeError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    print('per frame: ' + ', '.join(f'{s} {measured[s]:.1f} ms' for s in measured) +
          f"; front {' < '.join(ctrl.levels)}, budget {args.budget_ms:g} ms")
    for i, frame in enumerate(itertools.chain([first], frames)):
        sample = ctrl(frame, **call)['predictions'][0]
        count = int((sample.pred_instances.scores >= args.score_thr).sum())
        last = ctrl.log[-1]
        print(f"frame {i:4d}: {last['skip']} {last['latency_ms']:7.1f} ms, {count} "
              f'detections >= {args.score_thr}')
    summary = ctrl.summary()
    scope = profile[0].get('scope', 'profile')
    print(f"{summary['calls']} frames: {summary['over_budget'] * 100:.1f}% over "
          f"{args.budget_ms:g} ms, {summary['mean_gflops']:.3f} GFLOPs ({scope}) per frame "
          f"on average, {summary['switches']} depth changes")
    plot_controller_log(ctrl.log, args.out, args.budget_ms, ctrl.levels,
                        title=f'{osp.basename(args.config)}: budget {args.budget_ms:g} ms')
    print(f'wrote {args.out}')
    if args.log:
        if osp.dirname(args.log):
            os.makedirs(osp.dirname(args.log), exist_ok=True)
        with open(args.log, 'w') as f:
            json.dump(
                dict(budget_ms=args.budget_ms, levels=ctrl.levels, summary=summary, log=ctrl.log),
                f, indent=1)
        print(f'wrote {args.log}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
