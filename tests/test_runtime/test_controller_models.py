"""The controller around real models: a bare classifier, mmdet's DetInferencer and
mmpretrain's ImageClassificationInferencer on the tiny demo models, and the stream demo."""
import glob
import json
import re
import time

import cv2
import mmcv
import pytest
import torch
from mmdet.apis import DetInferencer
from mmengine.registry import DefaultScope
from mmpretrain.apis import ImageClassificationInferencer

import mmadn  # noqa: F401
from mmadn.analysis import profile_subnets
from mmadn.runtime import DepthController
from ..test_deploy.conftest import first_image, load_tool

SKIPS = ['FFFF', 'TTFF', 'TTTT']


class ScriptedClock:
    """Reads alternate between the start and the end of a call; the end is the start plus
    the scripted latency of the skip the backbone is really at, at that call."""

    def __init__(self, backbone, latency):
        self.backbone, self.latency = backbone, latency
        self.now, self.reads, self.calls = 0.0, 0, 0

    def __call__(self):
        self.reads += 1
        if self.reads % 2 == 0:
            self.now += self.latency(self.calls, self.backbone.skip_str) / 1e3
            self.calls += 1
        return self.now


# scripted latencies (ms) of the three sub-networks; with a 13 ms budget FFFF fits
# unloaded (within 0.8 x 13 = 10.4 ms); under a 1.5x load FFFF (15 ms) misses and TTTT
# (9 ms) is the deepest within 10.4 ms
LATENCY = dict(FFFF=10.0, TTFF=8.0, TTTT=6.0)
BUDGET = 13.0
# calls 12-19 loaded: FFFF misses at 12 and 13, TTTT from 14 on; once the load ends, 5
# calls with room for FFFF (20-24) take it back up
EXPECTED = ['FFFF'] * 14 + ['TTTT'] * 11 + ['FFFF'] * 5


def _latency(i, skip):
    return LATENCY[skip] * (1.5 if 12 <= i < 20 else 1.0)


def _scripted(profile):
    """The real profile (GFLOPs), with the scripted latencies."""
    return [dict(r, latency_ms=LATENCY[r['skip']]) for r in profile]


def test_det_inferencer_runs_the_depth_the_controller_logs(det_ckpt, det_data_root):
    config, ckpt = det_ckpt
    inferencer = DetInferencer(model=config, weights=ckpt, device='cpu', show_progress=False)
    model = inferencer.model
    image = mmcv.imread(first_image(det_data_root, 'val/*.png'))
    _, data = next(iter(inferencer.preprocess(inferencer._inputs_to_list(image), batch_size=1)))
    inputs = model.data_preprocessor(data, False)['inputs']
    profile = profile_subnets(model, inputs, skips=SKIPS, warmup=1, repeats=2)
    assert [r['scope'] for r in profile] == ['backbone+neck'] * 3
    call = dict(return_datasamples=True, no_save_pred=True)
    clock = ScriptedClock(model.backbone, _latency)
    ctrl = DepthController(inferencer, _scripted(profile), BUDGET, clock=clock)
    assert ctrl.levels == ['TTTT', 'TTFF', 'FFFF']
    direct = {}
    for skip in SKIPS:
        model.backbone.set_skip(skip)
        direct[skip] = inferencer(image, **call)['predictions'][0].pred_instances
    model.backbone.set_skip('TTFF')  # the controller sets its own depth before each call
    outs = [ctrl(image, **call)['predictions'][0].pred_instances for _ in range(30)]
    assert [c['skip'] for c in ctrl.log] == EXPECTED
    for out, skip in zip(outs, EXPECTED):  # each call really ran the logged depth
        assert torch.allclose(out.scores, direct[skip].scores, atol=1e-5)
        assert torch.allclose(out.bboxes, direct[skip].bboxes, atol=1e-3)
    assert not torch.allclose(direct['FFFF'].scores[:3], direct['TTTT'].scores[:3])
    summary = ctrl.summary()
    gf = {r['skip']: r['gflops'] for r in profile}
    assert gf['TTTT'] < gf['TTFF'] < gf['FFFF']
    assert summary['over_budget'] == pytest.approx(2 / 30)
    assert summary['mean_gflops'] == pytest.approx((19 * gf['FFFF'] + 11 * gf['TTTT']) / 30)
    # calibration times whole inferencer calls (heads and pipeline too) with the real clock
    ctrl.clock = time.perf_counter
    ctrl.set_budget(1e6)  # the scripted 13 ms are below the real latency
    measured = ctrl.calibrate(image, repeats=2, **call)
    assert set(measured) == set(SKIPS)
    assert all(measured[r['skip']] > r['latency_ms'] for r in profile)
    # expected per call: a + b x profiled latency, fitted by least squares over the front
    assert ctrl.levels == ['TTTT', 'TTFF', 'FFFF']
    fit = ctrl.fit
    assert fit['slope'] >= 0
    for r in _scripted(profile):
        assert ctrl.expected_ms[r['skip']] == pytest.approx(fit['intercept_ms'] +
                                                            fit['slope'] * r['latency_ms'])
    assert sum(ctrl.expected_ms.values()) == pytest.approx(sum(measured.values()))
    assert ctrl.skip == ctrl.levels[-1] == 'FFFF'


def test_image_classification_inferencer_and_a_bare_classifier(cls_ckpt, cls_data_root):
    config, ckpt = cls_ckpt
    image = first_image(cls_data_root, 'val/*/*.png')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(model=config, pretrained=ckpt, device='cpu')
        model = inferencer.model
        x = torch.rand(1, 3, 64, 64)
        profile = profile_subnets(model, x, skips=SKIPS, warmup=1, repeats=2)
        assert profile[0]['scope'] == 'classifier'
        clock = ScriptedClock(model.backbone, _latency)
        ctrl = DepthController(inferencer, _scripted(profile), BUDGET, clock=clock)
        direct = {}
        for skip in SKIPS:
            model.backbone.set_skip(skip)
            direct[skip] = torch.as_tensor(inferencer(image)[0]['pred_scores'])
        outs = [torch.as_tensor(ctrl(image)[0]['pred_scores']) for _ in range(30)]
    assert [c['skip'] for c in ctrl.log] == EXPECTED
    for out, skip in zip(outs, EXPECTED):
        assert torch.allclose(out, direct[skip], atol=1e-6)
    assert (direct['FFFF'] - direct['TTTT']).abs().max() > 1e-4

    # the bare model: the controlled call is model(x, mode='tensor')
    clock = ScriptedClock(model.backbone, _latency)
    bare = DepthController(model, _scripted(profile), BUDGET, clock=clock,
                           fn=lambda t: model(t, mode='tensor'))
    with torch.no_grad():
        logits = [bare(x) for _ in range(30)]
        for out, entry in zip(logits, bare.log):
            with model.backbone.skipping(entry['skip']):
                assert torch.allclose(out, model(x, mode='tensor'), atol=1e-6)
    assert [c['skip'] for c in bare.log] == EXPECTED


def test_stream_demo_on_a_folder_and_a_video(det_ckpt, det_data_root, tmp_path, capsys):
    config, ckpt = det_ckpt
    demo = load_tool('demo/adaptive_depth_stream.py')
    out = str(tmp_path / 'stream.png')
    log = str(tmp_path / 'stream.json')
    assert demo.main([
        config, ckpt, det_data_root + '/val', '--budget-ms', '100000', '--skips', 'FFFF,TTFF,TTTT',
        '--max-frames', '6', '--out', out, '--log', log, '--score-thr', '0'
    ]) == 0
    text = capsys.readouterr().out
    frames = re.findall(r'^frame +(\d+): (FFFF|TTFF|TTTT) +([\d.]+) ms, (\d+) detections', text,
                        re.M)
    # a budget far above every latency: the super-net on all frames
    assert [int(f[0]) for f in frames] == list(range(6))
    assert all(f[1] == 'FFFF' and float(f[2]) > 0 for f in frames)
    assert '6 frames: 0.0% over 100000 ms' in text
    with open(log) as f:
        written = json.load(f)
    assert [c['skip'] for c in written['log']] == ['FFFF'] * 6
    assert [round(c['latency_ms'], 1) for c in written['log']] == [float(f[2]) for f in frames]
    picture = mmcv.imread(out)
    assert picture.shape[0] > 300 and picture.shape[1] > 500
    assert (picture.max(-1) < 128).mean() > 0.005  # lines and text on white

    # a video of 4 frames, played twice; the profile read from a file
    video = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 5, (128, 128))
    images = sorted(glob.glob(det_data_root + '/val/*.png'))[:4]
    for path in images:
        writer.write(cv2.resize(mmcv.imread(path), (128, 128)))
    writer.release()
    profile = str(tmp_path / 'profile.json')
    with open(profile, 'w') as f:
        json.dump([
            dict(skip=s, gflops=g, latency_ms=ms, scope='backbone+neck')
            for s, g, ms in (('FFFF', 2.0, 1.0), ('TTTT', 1.0, 0.5))
        ], f)
    assert demo.main([
        config, ckpt, video, '--budget-ms', '100000', '--profile', profile, '--loop', '2', '--out',
        out
    ]) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r'^frame +\d+: FFFF', text, re.M)) == 8
    # both sub-networks of the profile timed through the inferencer (whole frames)
    assert re.search(r'^per frame: TTTT [\d.]+ ms, FFFF [\d.]+ ms; front ', text, re.M)


def test_stream_demo_rejects_bad_input(det_ckpt, det_data_root, tmp_path):
    config, ckpt = det_ckpt
    demo = load_tool('demo/adaptive_depth_stream.py')
    with pytest.raises(
            SystemExit, match=r"error: 'nope' does not exist \(expected a folder "
            r'of images or a video file\)'):
        demo.main([config, ckpt, 'nope', '--budget-ms', '50'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match='holds no image'):
        demo.main([config, ckpt, str(tmp_path / 'empty'), '--budget-ms', '50'])
    profile = str(tmp_path / 'profile.json')
    with open(profile, 'w') as f:
        json.dump([dict(skip='FFFF', gflops=2.0, latency_ms=20.0)], f)
    with pytest.raises(
            SystemExit, match=r'error: budget_ms=0.5 is below the latency of the '
            r'cheapest sub-network, FFFF \(20\.00 ms, profile\)'):
        demo.main(
            [config, ckpt, det_data_root + '/val', '--budget-ms', '0.5', '--profile', profile])
    with open(profile, 'w') as f:
        json.dump([dict(skip='FFF', gflops=2.0, latency_ms=20.0)], f)
    with pytest.raises(SystemExit, match=r"error: profile row 0 does not fit this model "):
        demo.main([config, ckpt, det_data_root + '/val', '--budget-ms', '50', '--profile', profile])


def test_stream_demo_loads_strictly_and_names_an_unreadable_frame(det_ckpt, cls_ckpt, det_data_root,
                                                                  tmp_path, capsys):
    config, ckpt = det_ckpt
    demo = load_tool('demo/adaptive_depth_stream.py')
    # a classifier's checkpoint with the detector's config: refused, nothing drawn
    with pytest.raises(SystemExit, match="error: checkpoint .* does not fit|holds another "
                       'model'):
        demo.main([
            config, cls_ckpt[1], det_data_root + '/val', '--budget-ms', '1000', '--out',
            str(tmp_path / 'no.png')
        ])
    assert not (tmp_path / 'no.png').exists()
    # a folder of 7 images whose 4th does not decode: 6 frames, one warning naming it
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i, path in enumerate(sorted(glob.glob(det_data_root + '/val/*.png'))[:7]):
        (folder / f'{i}.png').write_bytes(open(path, 'rb').read() if i != 3 else b'not a png')
    capsys.readouterr()
    assert demo.main([
        config, ckpt,
        str(folder), '--budget-ms', '100000', '--skips', 'FFFF,TTTT', '--out',
        str(tmp_path / 'stream.png')
    ]) == 0
    out, err = capsys.readouterr()
    assert '6 frames:' in out
    assert [ln for ln in err.splitlines() if ln.startswith('WARNING: skipping')
            ] == [f'WARNING: skipping {folder / "3.png"}: not a readable image']
