"""Tests of the synthetic demo shapes generator and its registered datasets."""
import importlib.util
import json
import multiprocessing as mp
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

try:
    from mmadn.datasets import demo_shapes
except ImportError:  # pragma: no cover
    # The generator itself needs only numpy + OpenCV; test it even when the mm* stack (e.g.
    # mmcv) is not importable. The registered-dataset tests below still need the package.
    _spec = importlib.util.spec_from_file_location(
        'demo_shapes',
        osp.join(osp.dirname(__file__), '..', '..', 'mmadn', 'datasets', 'demo_shapes.py'))
    demo_shapes = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(demo_shapes)

CLASSES = demo_shapes.DEMO_SHAPES_CLASSES
SMALL = dict(num_train=6, num_val=3, img_size=(64, 80))
SMALL_CLS = dict(num_train_per_class=3, num_val_per_class=2, img_size=(32, 32))


def _mmcv_ops_available() -> bool:
    try:
        import mmcv.ops  # noqa: F401
    except Exception:
        return False
    return True


needs_mmcv_ops = pytest.mark.skipif(not _mmcv_ops_available(),
                                    reason='mmcv (with ops) is not available')


def _tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def small_det(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('det') / 'shapes')
    demo_shapes.generate_demo_shapes(root, **SMALL)
    return root


def test_constants():
    assert CLASSES == ('circle', 'square', 'star', 'triangle')
    assert list(CLASSES) == sorted(CLASSES)  # CustomDataset labels folders sorted
    assert len(demo_shapes.DEMO_SHAPES_PALETTE) == len(CLASSES)
    assert all(
        len(c) == 3 and all(0 <= v <= 255 for v in c) for c in demo_shapes.DEMO_SHAPES_PALETTE)


def test_layout(small_det):
    for split, num in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        assert osp.isfile(osp.join(small_det, 'annotations', f'instances_{split}.json'))
        files = sorted(os.listdir(osp.join(small_det, split)))
        assert files == [f'{i:06d}.png' for i in range(1, num + 1)]
        img = cv2.imread(osp.join(small_det, split, files[0]))
        assert img.shape == (64, 80, 3)
    assert osp.isfile(osp.join(small_det, demo_shapes.MARKER_FILE))


def test_deterministic(small_det, tmp_path):
    again = str(tmp_path / 'again')
    demo_shapes.generate_demo_shapes(again, **SMALL)
    ref, new = _tree(small_det), _tree(again)
    assert sorted(ref) == sorted(new)
    for name in ref:
        assert ref[name] == new[name], name

    other = str(tmp_path / 'other_seed')
    demo_shapes.generate_demo_shapes(other, seed=1, **SMALL)
    diff = _tree(other)
    assert sorted(diff) == sorted(ref)
    changed = [n for n in ref if n.endswith('.png') and ref[n] != diff[n]]
    assert len(changed) == SMALL['num_train'] + SMALL['num_val']
    ann = 'annotations/instances_train.json'
    assert ref[ann] != diff[ann]


def test_image_independent_of_count(small_det, tmp_path):
    """Image i is the same whatever the number of images generated."""
    fewer = str(tmp_path / 'fewer')
    demo_shapes.generate_demo_shapes(fewer, num_train=2, num_val=1, img_size=(64, 80))
    for rel in ('train/000001.png', 'train/000002.png', 'val/000001.png'):
        with open(osp.join(fewer, rel), 'rb') as a, open(osp.join(small_det, rel), 'rb') as b:
            assert a.read() == b.read()


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_valid(small_det, split):
    coco = COCO(osp.join(small_det, 'annotations', f'instances_{split}.json'))
    num = SMALL[f'num_{split}']
    assert len(coco.imgs) == num
    assert [coco.cats[i]['name'] for i in sorted(coco.cats)] == list(CLASSES)
    assert sorted(coco.cats) == list(range(1, len(CLASSES) + 1))
    with open(osp.join(small_det, demo_shapes.MARKER_FILE)) as f:
        counts = json.load(f)['counts'][split]
    assert counts['images'] == num
    assert len(coco.anns) == counts['annotations'] >= num  # 1..3 objects per image
    assert sum(counts['per_class'].values()) == len(coco.anns)
    assert len({a['id'] for a in coco.anns.values()}) == len(coco.anns)

    for img_id, info in coco.imgs.items():
        assert (info['height'], info['width']) == SMALL['img_size']
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert anns, 'every image has objects'
        union = np.zeros((info['height'], info['width']), np.int32)
        for ann in anns:
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in coco.cats
            assert isinstance(ann['segmentation'], list) and ann['segmentation']
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            mask = coco.annToMask(ann)
            assert mask.shape == (info['height'], info['width'])
            area = int(mask.sum())
            assert area > 0 and ann['area'] > 0
            assert abs(ann['area'] - area) <= max(2, 0.02 * area)
            ys, xs = np.nonzero(mask)
            mask_box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            np.testing.assert_allclose(ann['bbox'], mask_box, atol=1)
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= info['width'] and y + h <= info['height']
            union += mask
        # visible regions of different objects never overlap (occluded ones are cut)
        assert union.max() == 1


def test_mask_to_polygons_exact():
    """Pixel-edge polygons decode back to exactly the mask (for hole-free masks)."""
    rng = np.random.RandomState(0)
    checked = 0
    for _ in range(300):
        h, w = rng.randint(4, 30, 2)
        mask = (rng.rand(h, w) < rng.uniform(0.3, 0.9)).astype(np.uint8)
        # fill the holes (COCO polygons cannot represent them)
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        holes = [c for c, hier in zip(contours, hierarchy[0]) if hier[3] >= 0] \
            if hierarchy is not None else []
        cv2.drawContours(mask, holes, -1, 1, thickness=cv2.FILLED)
        if not mask.any() or demo_shapes._has_holes(mask):
            continue
        polys = demo_shapes.mask_to_polygons(mask)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        np.testing.assert_array_equal(decoded, mask)
        checked += 1
    assert checked > 200
    # shapes, including ones touching the image border
    for kind in CLASSES:
        mask = demo_shapes.rasterize_polygon(demo_shapes.shape_polygon(kind, (10, 12), 12, 0.3), 24,
                                             20)
        decoded = mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(demo_shapes.mask_to_polygons(mask), 24, 20)))
        np.testing.assert_array_equal(decoded, mask)


def test_ensure_does_not_regenerate(tmp_path):
    root = str(tmp_path / 'sub' / 'shapes')
    assert demo_shapes.ensure_demo_shapes(root, **SMALL) == osp.abspath(root)
    marker = osp.join(root, demo_shapes.MARKER_FILE)
    image = osp.join(root, 'train', '000001.png')
    stamps = (os.stat(marker).st_mtime_ns, os.stat(image).st_mtime_ns)
    assert demo_shapes.ensure_demo_shapes(root, **SMALL) == osp.abspath(root)
    assert demo_shapes.ensure_demo_shapes(root) == osp.abspath(root)
    assert (os.stat(marker).st_mtime_ns, os.stat(image).st_mtime_ns) == stamps
    with pytest.warns(UserWarning, match='different parameters'):
        demo_shapes.ensure_demo_shapes(root, num_train=7)
    assert len(os.listdir(osp.join(root, 'train'))) == SMALL['num_train']
    assert os.listdir(tmp_path / 'sub') == ['shapes']  # no temporary directory left
    with pytest.raises(ValueError, match='demo_shapes'):
        demo_shapes.ensure_demo_shapes_cls(root)


def test_ensure_refuses_incomplete_dir(tmp_path):
    root = tmp_path / 'partial'
    root.mkdir()
    (root / 'something.txt').write_text('not a dataset')
    with pytest.raises(RuntimeError, match='not a complete'):
        demo_shapes.ensure_demo_shapes(str(root), **SMALL)
    assert sorted(os.listdir(tmp_path)) == ['partial']


def test_ensure_into_empty_dir(tmp_path):
    root = tmp_path / 'empty'
    root.mkdir()
    demo_shapes.ensure_demo_shapes(str(root), **SMALL)
    assert osp.isfile(root / demo_shapes.MARKER_FILE)


def _ensure_worker(root, barrier, cls):
    barrier.wait()
    if cls:
        demo_shapes.ensure_demo_shapes_cls(root, **SMALL_CLS)
    else:
        demo_shapes.ensure_demo_shapes(root, **SMALL)


@pytest.mark.parametrize('cls', [False, True])
def test_ensure_concurrent(tmp_path, cls):
    root = str(tmp_path / 'shared')
    ctx = mp.get_context('fork')
    num = 4
    barrier = ctx.Barrier(num)
    procs = [ctx.Process(target=_ensure_worker, args=(root, barrier, cls)) for _ in range(num)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * num
    assert os.listdir(tmp_path) == ['shared']  # the losers' copies were removed
    reference = str(tmp_path / 'reference')
    if cls:
        demo_shapes.generate_demo_shapes_cls(reference, **SMALL_CLS)
    else:
        demo_shapes.generate_demo_shapes(reference, **SMALL)
        coco = COCO(osp.join(root, 'annotations', 'instances_train.json'))
        assert len(coco.imgs) == SMALL['num_train']
    assert _tree(root) == _tree(reference)


def test_cls_layout_and_determinism(tmp_path):
    root = str(tmp_path / 'cls')
    demo_shapes.generate_demo_shapes_cls(root, **SMALL_CLS)
    for split, num in (('train', 3), ('val', 2)):
        assert sorted(os.listdir(osp.join(root, split))) == list(CLASSES)
        for name in CLASSES:
            files = sorted(os.listdir(osp.join(root, split, name)))
            assert files == [f'{i:06d}.png' for i in range(1, num + 1)]
            assert cv2.imread(osp.join(root, split, name, files[0])).shape == (32, 32, 3)
    with open(osp.join(root, demo_shapes.MARKER_FILE)) as f:
        meta = json.load(f)
    assert meta['generator'] == 'demo_shapes_cls'
    assert meta['counts']['train']['images'] == 3 * len(CLASSES)

    again = str(tmp_path / 'cls_again')
    demo_shapes.generate_demo_shapes_cls(again, **SMALL_CLS)
    assert _tree(root) == _tree(again)
    other = str(tmp_path / 'cls_other')
    demo_shapes.generate_demo_shapes_cls(other, seed=3, **SMALL_CLS)
    assert _tree(root) != _tree(other)

    # ensure reuses it
    stamp = os.stat(osp.join(root, demo_shapes.MARKER_FILE)).st_mtime_ns
    demo_shapes.ensure_demo_shapes_cls(root, **SMALL_CLS)
    assert os.stat(osp.join(root, demo_shapes.MARKER_FILE)).st_mtime_ns == stamp


def test_invalid_args(tmp_path):
    with pytest.raises(ValueError):
        demo_shapes.generate_demo_shapes(str(tmp_path / 'a'), classes=('hexagon', ))
    with pytest.raises(ValueError):
        demo_shapes.generate_demo_shapes_cls(str(tmp_path / 'b'), classes=('star', 'circle'))
    with pytest.raises(ValueError):
        demo_shapes.generate_demo_shapes(str(tmp_path / 'c'), seed=-1, num_train=1)


def test_cli(tmp_path, capsys):
    out = str(tmp_path / 'cli')
    demo_shapes.main(['--out', out, '--num-train', '2', '--num-val', '1', '--img-size', '32', '48'])
    text = capsys.readouterr().out
    assert 'generated' in text and 'train: 2 images' in text
    assert len(os.listdir(osp.join(out, 'train'))) == 2
    demo_shapes.main(['--out', out])
    assert 'already present' in capsys.readouterr().out
    out_cls = str(tmp_path / 'cli_cls')
    demo_shapes.main(
        ['--out', out_cls, '--cls', '--num-train', '1', '--num-val', '1', '--img-size', '16', '16'])
    assert 'demo_shapes_cls' in capsys.readouterr().out
    assert sorted(os.listdir(osp.join(out_cls, 'val'))) == list(CLASSES)


# ----------------------------------------------------------------------------------------
# Registered datasets (need the mm* stack, including mmcv's ops)
# ----------------------------------------------------------------------------------------
@needs_mmcv_ops
def test_det_dataset_registry(tmp_path):
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    import mmadn.datasets  # noqa: F401  (registers the datasets)

    root = str(tmp_path / 'det_ds')
    cfg = dict(
        type='DemoShapesDataset', data_root=root, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=1),
        generator_kwargs=dict(num_train=4, num_val=2, img_size=(64, 64)), pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs'),
        ])
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DATASETS.build(cfg)
        assert osp.isfile(osp.join(root, demo_shapes.MARKER_FILE))  # generated on use
        assert len(ds) == 4
        assert tuple(ds.metainfo['classes']) == CLASSES
        assert len(ds.metainfo['palette']) == len(CLASSES)
        coco = COCO(osp.join(root, 'annotations', 'instances_train.json'))
        for i in range(len(ds)):
            item = ds[i]
            assert tuple(item['inputs'].shape) == (3, 64, 64)
            sample = item['data_samples']
            num_anns = len(coco.getAnnIds(imgIds=sample.img_id))
            assert len(sample.gt_instances) == num_anns > 0
            assert len(sample.gt_instances.masks) == num_anns
            labels = sample.gt_instances.labels
            assert int(labels.min()) >= 0 and int(labels.max()) < len(CLASSES)
        # val split reuses the same root without regenerating
        val = DATASETS.build(
            dict(cfg, ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 test_mode=True))
        assert len(val) == 2


@needs_mmcv_ops
def test_cls_dataset_registry(tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS

    import mmadn.datasets  # noqa: F401  (registers the datasets)

    root = str(tmp_path / 'cls_ds')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(
            dict(type='DemoShapesClsDataset', data_root=root, split='val',
                 generator_kwargs=SMALL_CLS,
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='PackInputs')]))
        assert len(ds) == 2 * len(CLASSES)
        assert tuple(ds.CLASSES) == CLASSES
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert osp.basename(osp.dirname(info['img_path'])) == CLASSES[info['gt_label']]
        item = ds[0]
        assert tuple(item['inputs'].shape) == (3, 32, 32)
        assert int(item['data_samples'].gt_label) == ds.get_data_info(0)['gt_label']
        train = DATASETS.build(dict(type='DemoShapesClsDataset', data_root=root))
        assert len(train) == 3 * len(CLASSES)


def test_ensure_writes_missing_files_again(tmp_path):
    """A generated set with files missing is not used as it is: the generator knows what it
    wrote and writes the missing files again (the same bytes)."""
    root = demo_shapes.ensure_demo_shapes_cls(str(tmp_path / 'cls'), **SMALL_CLS)
    det = demo_shapes.ensure_demo_shapes(str(tmp_path / 'det'), **SMALL)
    full = {r: _tree(r) for r in (root, det)}
    gone = [
        osp.join(root, 'train', 'star', '000002.png'),
        osp.join(root, 'val', 'circle', '000001.png'),
        osp.join(det, 'annotations', 'instances_val.json'),
        osp.join(det, 'train', '000004.png')
    ]
    for path in gone:
        os.remove(path)
    with pytest.warns(
            UserWarning, match=r'2 of its 20 generated files were missing \('
            r'train/star/000002.png, val/circle/000001.png\); writing them again'):
        demo_shapes.ensure_demo_shapes_cls(root)
    with pytest.warns(UserWarning, match='2 of its 11 generated files were missing'):
        demo_shapes.ensure_demo_shapes(det)
    assert {r: _tree(r) for r in (root, det)} == full
    assert sorted(os.listdir(tmp_path)) == ['cls', 'det']  # no temporary directory left
    # the same with a record of another generator version: stop, saying how to regenerate
    marker = osp.join(root, demo_shapes.MARKER_FILE)
    meta = json.load(open(marker))
    meta['format_version'] = 0
    json.dump(meta, open(marker, 'w'))
    os.remove(gone[0])
    with pytest.raises(
            RuntimeError, match=r'1 of its 20 files are missing \(train/star/'
            r'000002.png\) .*delete .* to have it generated again'):
        demo_shapes.ensure_demo_shapes_cls(root)


def test_data_of_another_format_version_is_refused_with_the_command_to_regenerate(tmp_path):
    root = str(tmp_path / 'shapes')
    demo_shapes.ensure_demo_shapes(root, num_train=2, num_val=1, img_size=(32, 32))
    marker = os.path.join(root, demo_shapes.MARKER_FILE)
    with open(marker) as f:
        meta = json.load(f)
    meta['format_version'] = demo_shapes.FORMAT_VERSION - 1
    with open(marker, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match=r'another mmadn version.*--out .*shapes --force'):
        demo_shapes.ensure_demo_shapes(root)
