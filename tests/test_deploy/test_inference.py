import json
import re

import mmcv
import numpy as np
import pytest
import torch
from mmdet.apis import DetInferencer
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.apis import ImageClassificationInferencer

import mmadn  # noqa: F401
from mmadn.datasets import DEMO_SHAPES_CLASSES
from mmadn.deploy import export_subnet
from .conftest import first_image, load_tool


def _det(inferencer, image):
    pred = inferencer(image)['predictions'][0]
    return {k: np.asarray(pred[k]) for k in ('labels', 'scores', 'bboxes')}


def test_det_inferencer_adn_config_and_exported_model_agree(det_ckpt, det_data_root, tmp_path):
    config, ckpt = det_ckpt
    image = first_image(det_data_root, 'val/*.png')
    cfg = Config.fromfile(config)
    cfg.model.backbone.skip = 'TTFF'  # the depth chosen in the config
    adaptive = DetInferencer(model=cfg, weights=ckpt, device='cpu', show_progress=False)
    assert adaptive.model.backbone.skip_str == 'TTFF'
    assert tuple(adaptive.model.dataset_meta['classes']) == tuple(DEMO_SHAPES_CLASSES)
    ours = _det(adaptive, image)
    assert len(ours['scores']) > 0
    exported = export_subnet(config, ckpt, 'TTFF', str(tmp_path))
    static = DetInferencer(model=exported['config'], weights=exported['checkpoint'], device='cpu',
                           show_progress=False)
    theirs = _det(static, image)
    assert np.array_equal(ours['labels'], theirs['labels'])
    np.testing.assert_allclose(ours['scores'], theirs['scores'], atol=1e-5)
    np.testing.assert_allclose(ours['bboxes'], theirs['bboxes'], atol=1e-3)
    adaptive.model.backbone.set_skip('FFFF')  # another depth, other detections
    other = _det(adaptive, image)
    assert other['scores'].shape != ours['scores'].shape or \
        np.abs(other['scores'] - ours['scores']).max() > 1e-4


def test_image_classification_inferencer_at_a_chosen_depth(cls_ckpt, cls_data_root, tmp_path):
    config, ckpt = cls_ckpt
    image = first_image(cls_data_root, 'val/*/*.png')
    exported = export_subnet(config, ckpt, 'TTFF', str(tmp_path))
    # mmpretrain's inferencer builds its pipeline in the current default scope, which a
    # DetInferencer earlier in the same process leaves at mmdet
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(model=config, pretrained=ckpt, device='cpu')
        assert tuple(inferencer.classes) == tuple(DEMO_SHAPES_CLASSES)
        scores = {}
        for skip in ('FFFF', 'TTFF', 'TTTT'):
            inferencer.model.backbone.set_skip(skip)
            result = inferencer(image)[0]
            assert result['pred_class'] in DEMO_SHAPES_CLASSES
            scores[skip] = torch.as_tensor(result['pred_scores'])
        static = ImageClassificationInferencer(model=exported['config'],
                                               pretrained=exported['checkpoint'], device='cpu')
        static_result = static(image)[0]
    assert type(static.model.backbone).__name__ == 'StageResNet'
    assert abs(float(scores['TTTT'].sum()) - 1) < 1e-5
    assert (scores['TTTT'] - scores['FFFF']).abs().max() > 1e-4
    # the exported TTFF model through the same inferencer: the adaptive model's scores at TTFF
    static_scores = torch.as_tensor(static_result['pred_scores'])
    assert (static_scores - scores['TTFF']).abs().max() < 1e-5
    assert (static_scores - scores['FFFF']).abs().max() > 1e-4


def test_adaptive_depth_demo_writes_one_picture(det_ckpt, det_data_root, tmp_path, capsys):
    config, ckpt = det_ckpt
    image = first_image(det_data_root, 'val/*.png')
    out_file = str(tmp_path / 'depths.png')
    results = tmp_path / 'subnet_results.json'
    results.write_text(
        json.dumps({
            s: {
                'coco/bbox_mAP': m
            }
            for s, m in (('FFFF', 0.5), ('TTFF', 0.45), ('TTTT', 0.4))
        }))
    demo = load_tool('demo/adaptive_depth_demo.py')
    assert demo.main([
        config, ckpt, image, '--skips', 'FFFF,TTFF,base', '--out', out_file, '--repeats', '1',
        '--score-thr', '0', '--results',
        str(results)
    ]) == 0
    out = capsys.readouterr().out
    times = re.findall(
        r'^(FFFF|TTFF|TTTT): ([\d.]+) ms \(median of 1\), \d+ detections >= 0\.0, '
        r'bbox mAP ([\d.]+)$', out, re.M)
    assert [(t[0], t[2]) for t in times] == [('FFFF', '0.500'), ('TTFF', '0.450'),
                                             ('TTTT', '0.400')]
    assert all(float(t[1]) > 0 for t in times)
    # drawn on the image upscaled (nearest) so that its shorter side has 384 pixels
    original = mmcv.imread(image)
    original = mmcv.imrescale(original, 384 / min(original.shape[:2]),
                              interpolation='nearest').astype(np.int16)
    height, width = original.shape[:2]
    picture = mmcv.imread(out_file).astype(np.int16)
    assert picture.shape[1] == 3 * width and picture.shape[0] > height
    top = picture.shape[0] - height  # each panel: a label strip over the drawn image
    panels = [picture[:, i * width:(i + 1) * width] for i in range(3)]
    for panel in panels:
        strip = panel[:top]
        assert (strip == 255).all(-1).mean() > 0.6  # white ...
        assert (strip.max(-1) < 100).mean() > 0.01  # ... with dark text
        # the whole title fits: no dark pixel in the strip's last 2 % of columns
        assert (strip[:, -max(2, width // 50):].max(-1) >= 100).all()
        assert np.abs(panel[top:] - original).mean() > 1  # detections drawn on the image
    # each depth drew its own detections
    bodies = [p[top:] for p in panels]
    assert all(
        np.abs(a - b).mean() > 1
        for a, b in ((bodies[0], bodies[1]), (bodies[1], bodies[2]), (bodies[0], bodies[2])))


def test_adaptive_depth_demo_rejects_bad_input(det_ckpt, det_data_root, tmp_path):
    config, ckpt = det_ckpt
    image = first_image(det_data_root, 'val/*.png')
    demo = load_tool('demo/adaptive_depth_demo.py')
    out = str(tmp_path / 'x.png')
    with pytest.raises(SystemExit, match="error: skip='TTF': expected 4 letters of T/F"):
        demo.main([config, ckpt, image, '--skips', 'FFFF,TTF', '--out', out])
    with pytest.raises(SystemExit, match="error: 'nope.png' does not exist"):
        demo.main([config, ckpt, 'nope.png', '--out', out])
