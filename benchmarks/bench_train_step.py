"""Time an ADN training step (super-net + base-net, SubPathSpecializationHook) against a
plain training step of the same model, interleaved in one run (A B A B ...), medians.

    python benchmarks/bench_train_step.py --task cls  # ResNet-50 classifier, 224 px
    python benchmarks/bench_train_step.py --task det  # Mask R-CNN R-50-FPN

Goals (issue 4): cls ratio <= 1 + FLOPs(base)/FLOPs(super) + 5% (about 1.68x), det <= 1.4x.
Peak memory: on CUDA torch.cuda.max_memory_allocated per step kind; on CPU, with
``--memory``, each kind runs 2 steps in a fresh child process and its peak RSS is reported,
next to a plain step of the base-net alone (so plain + base = two separate models).
"""
import argparse
import os.path as osp
import resource
import subprocess
import sys
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmadn  # noqa: F401
from mmadn.engine.hooks import SubPathSpecializationHook


def build(task: str, device: str):
    if task == 'cls':
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        scope = 'mmpretrain'
        model = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='ResNetADN', depth=50, out_indices=(3, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048,
                      loss=dict(type='CrossEntropyLoss'))))
        batch = 32 if device == 'cuda' else 8
        inputs = torch.randn(batch, 3, 224, 224, device=device)
        samples = [DataSample().set_gt_label(i % 1000) for i in range(batch)]
    else:
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData
        scope = 'mmdet'
        import mmdet
        cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                                       '_base_', 'models', 'mask-rcnn_r50_fpn.py'))
        cfg.model.backbone = dict(type='ResNetADN', depth=50, frozen_stages=1,
                                  norm_eval=True, init_cfg=None)
        cfg.model.pop('data_preprocessor')
        model = MODELS.build(cfg.model)
        batch, size = (2, 800) if device == 'cuda' else (1, 512)
        inputs = torch.randn(batch, 3, size, size, device=device)
        samples = []
        for _ in range(batch):
            s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                            pad_shape=(size, size), scale_factor=(1., 1.),
                                            batch_input_shape=(size, size)))
            gt = InstanceData()
            gt.bboxes = torch.tensor([[40., 50., 300., 320.], [200., 100., 480., 400.]],
                                     device=device)
            gt.labels = torch.tensor([3, 7], device=device)
            masks = torch.zeros(2, size, size, dtype=torch.uint8)
            masks[0, 50:320, 40:300] = 1
            masks[1, 100:400, 200:480] = 1
            gt.masks = BitmapMasks(masks.numpy(), size, size)
            s.gt_instances = gt
            samples.append(s)
    model.init_weights()
    model.to(device).train()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9)))
    return scope, model, optim, inputs, samples


def step(model, optim, inputs, samples):
    losses = model(inputs, samples, mode='loss')
    loss, _ = model.parse_losses(losses)
    optim.update_params(loss)


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def run_only(args, scope, model, optim, inputs, samples):
    hook = SubPathSpecializationHook(feat_kd=dict(type='SubPathKDLoss', mode=args.kd_mode))
    with DefaultScope.overwrite_default_scope(scope):
        if args.only == 'adn':
            hook.install(model)
        model.backbone.set_skip('base' if args.only == 'base' else 'super')
        for _ in range(2):
            step(model, optim, inputs, samples)
    print('peak_rss_mib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def cpu_memory(args):
    peaks = {}
    for kind in ('plain', 'base', 'adn'):
        out = subprocess.run([sys.executable, __file__, '--task', args.task, '--device', 'cpu',
                              '--kd-mode', args.kd_mode, '--only', kind],
                             capture_output=True, text=True, check=True).stdout
        peaks[kind] = float(out.split('peak_rss_mib')[-1])
    print(f'task={args.task} kd_mode={args.kd_mode} peak RSS per process (MiB, CPU)')
    print('| step | peak RSS MiB |')
    print('|---|---|')
    print(f"| plain super-net (FFFF) | {peaks['plain']:.0f} |")
    print(f"| plain base-net alone (TTTT) | {peaks['base']:.0f} |")
    print(f"| ADN (FFFF + TTTT + KD) | {peaks['adn']:.0f} |")
    print(f"ADN / plain = {peaks['adn'] / peaks['plain']:.2f}x; two separate models "
          f"(plain + base) = {(peaks['plain'] + peaks['base']) / peaks['plain']:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=['cls', 'det'], default='cls')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--kd-mode', choices=['spatial', 'pooled'], default='spatial',
                        help='feature KD form (SubPathKDLoss mode)')
    parser.add_argument('--memory', action='store_true',
                        help='CPU: peak RSS of each step kind, each in a fresh process')
    parser.add_argument('--only', choices=['plain', 'adn', 'base'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        return cpu_memory(args)
    scope, model, optim, inputs, samples = build(args.task, args.device)
    if args.only:
        return run_only(args, scope, model, optim, inputs, samples)
    hook = SubPathSpecializationHook(feat_kd=dict(type='SubPathKDLoss', mode=args.kd_mode))
    times = {'plain': [], 'adn': []}
    peak = {}
    with DefaultScope.overwrite_default_scope(scope):
        for r in range(args.repeats + 1):  # the first round warms up
            for kind in ('plain', 'adn'):
                if kind == 'adn':
                    hook.install(model)
                if args.device == 'cuda':
                    torch.cuda.reset_peak_memory_stats()
                sync(args.device)
                t0 = time.perf_counter()
                step(model, optim, inputs, samples)
                sync(args.device)
                dt = time.perf_counter() - t0
                if args.device == 'cuda':
                    peak[kind] = torch.cuda.max_memory_allocated() / 2**20
                hook.uninstall()
                if r > 0:
                    times[kind].append(dt)
    bb = model.backbone
    plain, adn = statistics.median(times['plain']), statistics.median(times['adn'])
    print(f'task={args.task} kd_mode={args.kd_mode} device={args.device} batch={inputs.shape[0]} '
          f'size={inputs.shape[-1]} repeats={args.repeats} torch={torch.__version__}')
    print('| step | median s | peak memory MiB |')
    print('|---|---|---|')
    print(f"| plain (FFFF only) | {plain:.3f} | {peak.get('plain', float('nan')):.0f} |")
    print(f"| ADN (FFFF + TTTT + KD) | {adn:.3f} | {peak.get('adn', float('nan')):.0f} |")
    goal = 1.68 if args.task == 'cls' else 1.4
    print(f'ADN / plain = {adn / plain:.2f}x (goal <= {goal}x); backbone skip after: '
          f'{bb.skip_str}')


if __name__ == '__main__':
    main()
