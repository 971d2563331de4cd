"""Deterministic synthetic "shapes" data for demos and tests.

Two tiny datasets that are generated on the fly (a couple of seconds on a laptop CPU):

* **Detection / instance segmentation** (:func:`generate_demo_shapes`): COCO-format
  annotations, several coloured shapes per image on textured backgrounds (smooth noise,
  gradients, stripes, checkerboards), with moderate occlusion. Layout (the MMDetection
  ``CocoDataset`` convention)::

      root/annotations/instances_train.json   # data_root=root,
      root/annotations/instances_val.json     # ann_file='annotations/instances_train.json',
      root/train/000001.png ...               # data_prefix=dict(img='train/')
      root/val/000001.png ...

* **Classification** (:func:`generate_demo_shapes_cls`): one dominant shape per image, in
  the MMPretrain ``CustomDataset`` folder layout ``root/{train,val}/<class_name>/*.png``.

Annotations are exact: each object's segmentation is the polygon outline (traced along pixel
edges) of the *visible* part of the object, so ``pycocotools`` decodes it back to exactly the
pixels showing the object in the image; ``bbox`` and ``area`` are computed from the same
pixels. Placements that would hide more than ``max_occlusion`` of an earlier object, or punch
a hole into it (which COCO polygons cannot represent), are rejected and re-sampled.

Generation is deterministic: the same arguments produce byte-identical files (every image
is drawn from its own ``numpy.random.RandomState`` seeded with ``(seed, stream, index)``, so
image ``i`` does not depend on how many images are generated, and nothing time-dependent is
written).

:func:`ensure_demo_shapes` / :func:`ensure_demo_shapes_cls` generate only when the data are
missing, atomically (into a temporary sibling directory that is then renamed), so that all
processes of a distributed run may call them concurrently.

This module deliberately depends only on the standard library, numpy and OpenCV (no
mmengine / mmdet / mmpretrain), so that it can be used without them; the registered dataset
classes live in :mod:`mmadn.datasets.demo_datasets`.

CLI::

    python -m mmadn.datasets.demo_shapes --out data/demo_shapes [--cls] [--force]
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    'DEMO_SHAPES_CLASSES', 'DEMO_SHAPES_PALETTE', 'MARKER_FILE', 'generate_demo_shapes',
    'ensure_demo_shapes', 'generate_demo_shapes_cls', 'ensure_demo_shapes_cls', 'mask_to_polygons',
    'make_background', 'shape_polygon', 'rasterize_polygon'
]

#: Class names. Kept in alphabetical order on purpose: MMPretrain's ``CustomDataset`` maps
#: sub-folders to labels in sorted order, so this order is valid for both datasets.
DEMO_SHAPES_CLASSES: Tuple[str, ...] = ('circle', 'square', 'star', 'triangle')
#: RGB colours for visualisation, one per class (MMDetection ``METAINFO['palette']``).
DEMO_SHAPES_PALETTE: List[Tuple[int, int, int]] = [(220, 20, 60), (0, 114, 255), (255, 179, 0),
                                                   (0, 170, 80)]
assert list(DEMO_SHAPES_CLASSES) == sorted(DEMO_SHAPES_CLASSES)

#: Written last into a generated root; its presence means "complete". It records the
#: generator and its parameters (no time stamps).
MARKER_FILE = 'demo_shapes_meta.json'
FORMAT_VERSION = 2  # 2: the demo's defaults (fewer, larger objects; 32 px classification)

# Sub-streams of the random generator, so that splits / datasets never share images.
_STREAMS = {'train': 0, 'val': 1, 'cls_train': 2, 'cls_val': 3}
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


# ----------------------------------------------------------------------------------------
# Drawing helpers (shared by the detection and the classification generator)
# ----------------------------------------------------------------------------------------
def _rng(seed: int, stream: str, *index: int) -> np.random.RandomState:
    """An independent, reproducible random stream for one image."""
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f'seed must be in [0, 2**32), got {seed}')
    key = [int(seed), _STREAMS[stream]] + [int(i) for i in index]
    return np.random.RandomState(np.array(key, dtype=np.uint32))


def _random_color(
    rng: np.random.RandomState, sat: Tuple[float,
                                           float] = (0.45, 1.0), val: Tuple[float,
                                                                            float] = (0.35, 1.0)
) -> np.ndarray:
    """A random RGB colour (float32, 0..255) drawn in HSV space."""
    hsv = np.array([[[rng.uniform(0, 180),
                      rng.uniform(*sat) * 255,
                      rng.uniform(*val) * 255]]], dtype=np.float32)
    hsv = np.clip(np.round(hsv), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def make_background(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """A textured RGB background (uint8, HxWx3).

    One of: smooth colour noise, a linear two-colour gradient, (soft) stripes or a rotated
    checkerboard, plus per-pixel Gaussian noise.
    """
    kind = rng.randint(4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    c1 = _random_color(rng, sat=(0.0, 0.8), val=(0.15, 1.0))
    c2 = _random_color(rng, sat=(0.0, 0.8), val=(0.15, 1.0))
    if kind == 0:  # smooth value noise
        cells = rng.randint(3, 10)
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        if kind == 1:  # linear gradient
            t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        elif kind == 2:  # stripes, from soft sine to almost hard edges
            period = rng.uniform(5, 24)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
            t = np.clip((t - 0.5) * rng.uniform(1, 4) + 0.5, 0, 1)
        else:  # checkerboard
            cell = rng.uniform(5, 20)
            t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    img = img + rng.normal(0, rng.uniform(2, 12), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def shape_polygon(kind: str, center: Sequence[float], radius: float, angle: float = 0.0,
                  rng: Optional[np.random.RandomState] = None) -> np.ndarray:
    """Vertices ((N, 2) float64, x/y) of a shape with the given circumradius.

    ``angle`` is in radians. ``rng`` (optional) jitters the triangle's vertices a little so
    that not all triangles are equilateral.
    """
    cx, cy = center
    if kind == 'circle':
        n = int(np.clip(radius * 2, 24, 96))
        a = angle + np.arange(n) * 2 * np.pi / n
        r = np.full(n, radius)
    elif kind == 'square':
        a = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        r = np.full(4, radius)
    elif kind == 'triangle':
        a = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        r = np.full(3, radius)
        if rng is not None:
            a = a + rng.uniform(-0.25, 0.25, 3)
            r = r * rng.uniform(0.85, 1.0, 3)
    elif kind == 'star':
        a = angle - np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    else:
        raise ValueError(f'unknown shape {kind!r}')
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def rasterize_polygon(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Binary mask (uint8, 0/1) of a float polygon, with sub-pixel vertex precision."""
    mask = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(poly) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def _paint(img: np.ndarray, mask: np.ndarray, color: np.ndarray,
           rng: np.random.RandomState) -> None:
    """Paint ``mask`` in place: shaded fill, sometimes with a darker/lighter rim.

    Only pixels inside ``mask`` change, so the annotation stays exact.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xs * np.cos(theta) + ys * np.sin(theta)) / max(h, w)  # ~[-1.4, 1.4]
    shade = 1.0 + rng.uniform(0.0, 0.35) * t
    img[ys, xs] = np.round(np.clip(color[None] * shade[:, None], 0, 255)).astype(np.uint8)
    if rng.rand() < 0.5:  # rim
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8), borderValue=0)
        rim = (mask > 0) & (inner == 0)
        factor = 0.55 if rng.rand() < 0.7 else 1.5
        img[rim] = np.clip(np.round(color * factor), 0, 255).astype(np.uint8)


def _pick_color(rng: np.random.RandomState, img: np.ndarray, mask: np.ndarray,
                min_dist: float = 80.0, tries: int = 8) -> np.ndarray:
    """A random colour that contrasts with the image pixels under ``mask``."""
    under = img[mask.astype(bool)].astype(np.float32)
    best, best_d = None, -1.0
    for _ in range(tries):
        c = _random_color(rng)
        d = float(np.sqrt(((under - c)**2).sum(1)).mean())
        if d > best_d:
            best, best_d = c, d
        if d >= min_dist:
            break
    return best


def _draw_clutter(rng: np.random.RandomState, img: np.ndarray, num: int) -> None:
    """A few random thin line segments (class-less distractors)."""
    h, w = img.shape[:2]
    for _ in range(num):
        p1 = (int(rng.randint(w)), int(rng.randint(h)))
        p2 = (int(rng.randint(w)), int(rng.randint(h)))
        color = tuple(int(c) for c in _random_color(rng))
        cv2.line(img, p1, p2, color, int(rng.randint(1, 3)), lineType=cv2.LINE_AA)


def _has_holes(mask: np.ndarray) -> bool:
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons tracing the pixel-edge outline of each component of ``mask``.

    Vertices lie on pixel corners (pixel ``(x, y)`` covers ``[x, x+1] x [y, y+1]``), so
    ``pycocotools`` decodes the polygons back to exactly ``mask`` -- provided the mask has
    no holes (COCO polygons cannot represent holes; :func:`generate_demo_shapes` never
    produces any).

    Trick: on the 2x nearest-upsampled mask, OpenCV's contour runs through the centres of
    the outermost sub-pixels; sub-pixel column ``u`` lies on the left edge of a pixel when
    ``u`` is even and on the right edge when odd, so ``(u + 1) // 2`` is the pixel-corner
    coordinate (same for rows).
    """
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    up = np.pad(up, 1)  # findContours ignores nothing at the image border then
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(-1, -1))
    polygons = []
    for contour in contours:
        pts = (contour.reshape(-1, 2) + 1) // 2
        pts = _simplify_closed(pts)
        if len(pts) >= 3:
            polygons.append([float(v) for v in pts.reshape(-1)])
    return polygons


def _simplify_closed(pts: np.ndarray) -> np.ndarray:
    """Drop repeated and collinear (straight-through) vertices of a closed polyline."""
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    pts = pts[keep] if keep.any() else pts[:1]
    if len(pts) < 3:
        return pts
    prev_d = pts - np.roll(pts, 1, axis=0)
    next_d = np.roll(pts, -1, axis=0) - pts
    cross = prev_d[:, 0] * next_d[:, 1] - prev_d[:, 1] * next_d[:, 0]
    dot = (prev_d * next_d).sum(1)
    return pts[~((cross == 0) & (dot > 0))]


def _write_png(path: str, img_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode('.png', cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
    if not ok:
        raise IOError(f'could not encode {path}')
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _write_json(path: str, obj) -> None:
    text = json.dumps(obj, separators=(',', ':'))  # one-shot: C encoder, fast
    with open(path, 'w') as f:
        f.write(text)


# ----------------------------------------------------------------------------------------
# Detection / instance segmentation
# ----------------------------------------------------------------------------------------
def _render_detection_image(rng: np.random.RandomState, height: int, width: int,
                            classes: Sequence[str], num_objects: Tuple[int, int],
                            size_range: Tuple[float, float], max_occlusion: float, min_area: int,
                            max_tries: int = 30):
    """Render one image; returns ``(img, [(label, visible_mask), ...])``."""
    img = make_background(rng, height, width)
    inst = np.full((height, width), -1, np.int16)  # index of the top-most object per pixel
    full_areas: List[int] = []
    labels: List[int] = []
    target = rng.randint(num_objects[0], num_objects[1] + 1)
    short = min(height, width)
    for _ in range(target):
        for _try in range(max_tries):
            label = int(rng.randint(len(classes)))
            radius = rng.uniform(*size_range) * short
            radius = min(radius, short / 2 - 1)
            cx = rng.uniform(radius, width - radius)
            cy = rng.uniform(radius, height - radius)
            poly = shape_polygon(classes[label], (cx, cy), radius, rng.uniform(0, 2 * np.pi), rng)
            mask = rasterize_polygon(poly, height, width)
            area = int(mask.sum())
            if area < min_area:
                continue
            new_inst = inst.copy()
            new_inst[mask.astype(bool)] = len(labels)
            covered = np.unique(inst[mask.astype(bool)])
            ok = True
            for j in covered[covered >= 0]:
                vis = new_inst == j
                if vis.sum() < max(min_area, (1 - max_occlusion) * full_areas[j]) \
                        or _has_holes(vis):
                    ok = False
                    break
            if not ok:
                continue
            _paint(img, mask, _pick_color(rng, img, mask), rng)
            inst = new_inst
            full_areas.append(area)
            labels.append(label)
            break
    return img, [(labels[k], inst == k) for k in range(len(labels))]


def _coco_annotation(ann_id: int, img_id: int, cat_id: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(id=ann_id, image_id=img_id, category_id=cat_id, segmentation=mask_to_polygons(mask),
                area=float(len(xs)),
                bbox=[float(x0),
                      float(y0),
                      float(xs.max() - x0 + 1),
                      float(ys.max() - y0 + 1)], iscrowd=0)


def generate_demo_shapes(root: str, num_train: int = 200, num_val: int = 50,
                         img_size: Tuple[int, int] = (128, 128), seed: int = 0,
                         num_objects: Tuple[int, int] = (1, 3),
                         size_range: Tuple[float,
                                           float] = (0.15, 0.35), max_occlusion: float = 0.15,
                         min_area: int = 30, classes: Sequence[str] = DEMO_SHAPES_CLASSES) -> str:
    """Write the COCO-format shapes dataset into ``root`` (overwriting files); returns root.

    Args:
        root: output directory (created if needed).
        num_train / num_val: number of images per split.
        img_size: ``(height, width)``.
        seed: base seed in ``[0, 2**32)``.
        num_objects: inclusive range of objects placed per image (an object whose placement
            keeps failing the occlusion rules is dropped, rarely).
        size_range: range of the shapes' circumradius, as a fraction of the short side.
        max_occlusion: the largest fraction of an object that later objects may cover.
        min_area: minimum (visible) area in pixels of every object.
        classes: subset/order of :data:`DEMO_SHAPES_CLASSES` to draw.

    The marker file :data:`MARKER_FILE` is written last.
    """
    classes = tuple(classes)
    unknown = set(classes) - set(DEMO_SHAPES_CLASSES)
    if unknown:
        raise ValueError(f'unknown classes {sorted(unknown)}')
    height, width = (int(s) for s in img_size)
    params = dict(num_train=int(num_train), num_val=int(num_val), img_size=[height, width],
                  seed=int(seed), num_objects=[int(n) for n in num_objects],
                  size_range=[float(s) for s in size_range], max_occlusion=float(max_occlusion),
                  min_area=int(min_area), classes=list(classes))
    categories = [dict(id=i + 1, name=c, supercategory='shape') for i, c in enumerate(classes)]
    counts: Dict[str, dict] = {}
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, num in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, split)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(int(num)):
            rng = _rng(seed, split, i)
            img, objects = _render_detection_image(rng, height, width, classes, tuple(num_objects),
                                                   tuple(size_range), max_occlusion, min_area)
            img_id = i + 1
            file_name = f'{img_id:06d}.png'
            _write_png(osp.join(img_dir, file_name), img)
            images.append(dict(id=img_id, file_name=file_name, height=height, width=width))
            for label, mask in objects:
                annotations.append(_coco_annotation(len(annotations) + 1, img_id, label + 1, mask))
        coco = dict(
            info=dict(description='mmadn demo shapes (synthetic)', version=str(FORMAT_VERSION)),
            licenses=[], images=images, annotations=annotations, categories=categories)
        _write_json(osp.join(root, 'annotations', f'instances_{split}.json'), coco)
        per_class = {c: 0 for c in classes}
        for ann in annotations:
            per_class[classes[ann['category_id'] - 1]] += 1
        counts[split] = dict(images=len(images), annotations=len(annotations), per_class=per_class)
    _write_json(
        osp.join(root, MARKER_FILE),
        dict(generator='demo_shapes', format_version=FORMAT_VERSION, params=params, counts=counts))
    return root


# ----------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------
def _render_cls_image(rng: np.random.RandomState, height: int, width: int, kind: str,
                      size_range: Tuple[float, float], max_clutter: int) -> np.ndarray:
    img = make_background(rng, height, width)
    _draw_clutter(rng, img, int(rng.randint(max_clutter + 1)))
    short = min(height, width)
    radius = min(rng.uniform(*size_range) * short, short / 2 - 1)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    mask = rasterize_polygon(shape_polygon(kind, (cx, cy), radius, rng.uniform(0, 2 * np.pi), rng),
                             height, width)
    _paint(img, mask, _pick_color(rng, img, mask), rng)
    return img


def generate_demo_shapes_cls(root: str, num_train_per_class: int = 1000,
                             num_val_per_class: int = 50, img_size: Tuple[int, int] = (32, 32),
                             seed: int = 0, size_range: Tuple[float, float] = (0.2, 0.45),
                             max_clutter: int = 2,
                             classes: Sequence[str] = DEMO_SHAPES_CLASSES) -> str:
    """Write the classification variant into ``root``; returns root.

    Layout ``root/{train,val}/<class_name>/NNNNNN.png`` (MMPretrain ``CustomDataset`` with
    ``data_root=root, data_prefix='train'``); one shape per image, of circumradius
    ``size_range`` x short side, plus up to ``max_clutter`` random line segments.
    ``classes`` must be sorted (``CustomDataset`` labels folders in sorted order).
    """
    classes = tuple(classes)
    if set(classes) - set(DEMO_SHAPES_CLASSES) or list(classes) != sorted(classes):
        raise ValueError(f'classes must be a sorted subset of {DEMO_SHAPES_CLASSES}')
    height, width = (int(s) for s in img_size)
    params = dict(num_train_per_class=int(num_train_per_class),
                  num_val_per_class=int(num_val_per_class), img_size=[height, width],
                  seed=int(seed), size_range=[float(s) for s in size_range],
                  max_clutter=int(max_clutter), classes=list(classes))
    counts = {}
    for split, num in (('train', num_train_per_class), ('val', num_val_per_class)):
        for label, name in enumerate(classes):
            out_dir = osp.join(root, split, name)
            os.makedirs(out_dir, exist_ok=True)
            # index the stream by the class's global id, so subsets draw the same images
            gid = DEMO_SHAPES_CLASSES.index(name)
            for i in range(int(num)):
                img = _render_cls_image(_rng(seed, 'cls_' + split, gid, i), height, width, name,
                                        tuple(size_range), max_clutter)
                _write_png(osp.join(out_dir, f'{i + 1:06d}.png'), img)
        counts[split] = dict(images=int(num) * len(classes),
                             per_class={c: int(num)
                                        for c in classes})
    _write_json(
        osp.join(root, MARKER_FILE),
        dict(generator='demo_shapes_cls', format_version=FORMAT_VERSION, params=params,
             counts=counts))
    return root


# ----------------------------------------------------------------------------------------
# Generate-if-missing, safe under concurrency
# ----------------------------------------------------------------------------------------
def _read_marker(root: str) -> Optional[dict]:
    path = osp.join(root, MARKER_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _ensure(root: str, generator: str, generate_fn, kwargs: dict) -> str:
    root = osp.abspath(osp.expanduser(str(root)))
    marker = _read_marker(root)
    if marker is None:
        parent = osp.dirname(root)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.tmp-', dir=parent)
        try:
            generate_fn(tmp, **kwargs)
            os.chmod(tmp, 0o755)  # mkdtemp creates 0700
            try:
                # atomic; fails if ``root`` became a non-empty directory meanwhile
                os.rename(tmp, root)
            except OSError:
                if _read_marker(root) is None:
                    raise RuntimeError(f'{root} exists but is not a complete demo dataset (no '
                                       f'{MARKER_FILE}); remove it to have it generated.')
                # another process finished first: keep its copy (identical) and drop ours
        finally:
            if osp.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        marker = _read_marker(root)
    if marker.get('generator') != generator:
        raise ValueError(f'{root} holds a {marker.get("generator")!r} dataset, '
                         f'not {generator!r}')
    missing = missing_files(root, marker)
    if missing:
        _repair(root, marker, generate_fn, missing)
    if marker.get('format_version') != FORMAT_VERSION:
        raise ValueError(
            f'{root} was generated by another mmadn version (format '
            f'{marker.get("format_version")}, this one writes {FORMAT_VERSION}): regenerate it '
            f'with `python -m mmadn.datasets.demo_shapes --out {root} '
            f'{"--cls " if generator == "demo_shapes_cls" else ""}--force`')
    if kwargs:
        # compare the requested parameters with those recorded (best effort)
        recorded = marker.get('params', {})
        requested = json.loads(json.dumps(kwargs))
        differ = {
            k: (recorded.get(k), v)
            for k, v in requested.items()
            if k in recorded and _normalise(recorded[k]) != _normalise(v)
        }
        if differ:
            warnings.warn(f'{root} was generated with different parameters '
                          f'(recorded, requested): {differ}; using it as is. '
                          'Delete it to regenerate.')
    return root


def expected_files(marker: dict) -> List[str]:
    """The files (relative to the root) that the generator recorded in ``marker`` wrote."""
    files = []
    counts = marker.get('counts', {})
    if marker.get('generator') == 'demo_shapes':
        for split, c in counts.items():
            files.append(f'annotations/instances_{split}.json')
            files += [f'{split}/{i:06d}.png' for i in range(1, int(c['images']) + 1)]
    elif marker.get('generator') == 'demo_shapes_cls':
        for split, c in counts.items():
            for name, num in c.get('per_class', {}).items():
                files += [f'{split}/{name}/{i:06d}.png' for i in range(1, int(num) + 1)]
    return files


def missing_files(root: str, marker: dict) -> List[str]:
    """The recorded files that are not under ``root`` (relative paths)."""
    return [f for f in expected_files(marker) if not osp.isfile(osp.join(root, f))]


def _repair(root: str, marker: dict, generate_fn, missing: List[str]) -> None:
    """Write the missing files again: generation is deterministic, so the recorded
    parameters give the same bytes. Each file is renamed into place (safe when several
    processes repair at once)."""
    shown = ', '.join(missing[:3]) + (' ...' if len(missing) > 3 else '')
    total = len(expected_files(marker))
    if marker.get('format_version') != FORMAT_VERSION:
        raise RuntimeError(
            f'{root}: {len(missing)} of its {total} files are missing ({shown}) and it was '
            f'generated by another version of the generator; delete {root} to have it '
            'generated again on first use')
    warnings.warn(f'{root}: {len(missing)} of its {total} generated files were missing '
                  f'({shown}); writing them again from the recorded parameters')
    parent = osp.dirname(root)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.repair-', dir=parent)
    try:
        generate_fn(tmp, **marker['params'])
        for rel in missing:
            target = osp.join(root, rel)
            os.makedirs(osp.dirname(target), exist_ok=True)
            os.replace(osp.join(tmp, rel), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    still = missing_files(root, marker)
    if still:
        raise RuntimeError(f'{root}: {len(still)} generated files are still missing '
                           f'({", ".join(still[:3])}); delete {root} to have it generated '
                           'again on first use')


def _normalise(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def ensure_demo_shapes(root: str, **kwargs) -> str:
    """Generate the detection dataset into ``root`` unless it is already complete.

    ``kwargs`` go to :func:`generate_demo_shapes`. Safe to call from several processes at
    once (each generates into a temporary sibling directory; the first ``os.rename`` wins,
    the others discard their copy). An existing complete dataset is reused as is (with a
    warning if it was generated with different parameters). Returns ``root`` (absolute).
    """
    return _ensure(root, 'demo_shapes', generate_demo_shapes, kwargs)


def ensure_demo_shapes_cls(root: str, **kwargs) -> str:
    """Like :func:`ensure_demo_shapes`, for :func:`generate_demo_shapes_cls`."""
    return _ensure(root, 'demo_shapes_cls', generate_demo_shapes_cls, kwargs)


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description='Generate the synthetic demo shapes dataset (COCO instance '
        'segmentation, or with --cls an image-folder classification set).')
    parser.add_argument(
        '--out', default=None, help='output root (default data/demo_shapes, or '
        'data/demo_shapes_cls with --cls)')
    parser.add_argument('--cls', action='store_true', help='classification variant')
    parser.add_argument('--num-train', type=int, default=None,
                        help='train images (per class with --cls)')
    parser.add_argument('--num-val', type=int, default=None,
                        help='val images (per class with --cls)')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'), default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='regenerate if present')
    args = parser.parse_args(argv)

    out = args.out or ('data/demo_shapes_cls' if args.cls else 'data/demo_shapes')
    kwargs = dict(seed=args.seed)
    if args.img_size:
        kwargs['img_size'] = tuple(args.img_size)
    prefix = 'num_{}_per_class' if args.cls else 'num_{}'
    if args.num_train is not None:
        kwargs[prefix.format('train')] = args.num_train
    if args.num_val is not None:
        kwargs[prefix.format('val')] = args.num_val
    if args.force and osp.exists(out):
        shutil.rmtree(out)
    existed = _read_marker(out) is not None
    start = time.perf_counter()
    root = (ensure_demo_shapes_cls if args.cls else ensure_demo_shapes)(out, **kwargs)
    elapsed = time.perf_counter() - start
    marker = _read_marker(root)
    print(f'{marker["generator"]} at {root} '
          f'({"already present" if existed else f"generated in {elapsed:.2f}s"})')
    print(f'  params: {json.dumps(marker["params"])}')
    for split, c in marker['counts'].items():
        extra = f', {c["annotations"]} objects' if 'annotations' in c else ''
        print(f'  {split}: {c["images"]} images{extra}; per class: {c["per_class"]}')


if __name__ == '__main__':
    main()
