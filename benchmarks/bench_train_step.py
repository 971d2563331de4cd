"""Time and memory of three training steps of the same model, measured side by side in one
run: a plain step (super-net only), the ADN step with one backward
(``SubPathSpecializationHook(two_backward=False)``) and with two backwards (the default).

    python benchmarks/bench_train_step.py --task cls  # ResNet-50 classifier, 224 px, batch 8
    python benchmarks/bench_train_step.py --task det  # Mask R-CNN R-50-FPN, 512 px, batch 1
    python benchmarks/bench_train_step.py --task cls --device cuda --batch 64 --json out.json

Per step kind:

- median step time over ``--repeats`` rounds, the kinds interleaved (plain, one-backward,
  two-backward, plain, ...), after one warm-up round; wall time and the process's CPU time
  (on a shared machine with ``OMP_NUM_THREADS=1`` the CPU time is the steadier figure);
- peak saved bytes: the largest total, during one step, of the distinct storages that
  autograd keeps for the backward (``torch.autograd.graph.saved_tensors_hooks``; the
  model's parameters and buffers are left out), plus the detached teacher features
  (``SubPathDistiller.super_pass``'s) kept between the two passes;
- CPU: peak RSS (Linux ``VmHWM``) of a fresh process that builds the model and runs 2
  steps of that kind, and that peak minus the RSS of the built model, medians over
  ``--rss-runs`` processes per kind, interleaved (``--no-rss`` to skip); CUDA:
  ``torch.cuda.max_memory_allocated`` of a step (the largest over the rounds).

Goals (two-backward): peak saved bytes <= 1.10x plain; step time no worse than the
one-backward step (<= 1.72x plain; the floor is 1 + FLOPs(base)/FLOPs(super) = 1.63x).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import weakref

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmadn  # noqa: F401
from mmadn.engine.hooks import SubPathSpecializationHook

KINDS = ('plain', 'one_backward', 'two_backward')
LABELS = {
    'plain': 'plain (super-net only)',
    'one_backward': 'ADN, one backward',
    'two_backward': 'ADN, two backwards',
}


def build(task: str, device: str, batch: int, size, amp: bool = False):
    """A ResNet-50-ADN classifier or Mask R-CNN R-50-ADN-FPN, its optimizer wrapper and one
    batch of ``train_step`` data."""
    h, w = size
    if task == 'cls':
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        scope = 'mmpretrain'
        model = MODELS.build(
            dict(
                type='ImageClassifier', backbone=dict(type='ResNetADN', depth=50,
                                                      out_indices=(3, )),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048,
                          loss=dict(type='CrossEntropyLoss'))))
        inputs = torch.randn(batch, 3, h, w, device=device)
        samples = [DataSample().set_gt_label(i % 1000) for i in range(batch)]
    else:
        import os.path as osp

        import mmdet
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData
        scope = 'mmdet'
        cfg = Config.fromfile(
            osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', '_base_', 'models',
                     'mask-rcnn_r50_fpn.py'))
        cfg.model.backbone = dict(type='ResNetADN', depth=50, frozen_stages=1, norm_eval=True,
                                  init_cfg=None)
        cfg.model.pop('data_preprocessor')
        model = MODELS.build(cfg.model)
        pad = (-(-h // 32) * 32, -(-w // 32) * 32)  # mmdet pads to a multiple of 32
        inputs = torch.randn(batch, 3, *pad, device=device)
        samples = []
        for _ in range(batch):
            s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(
                h, w), pad_shape=pad, scale_factor=(1., 1.), batch_input_shape=pad))
            gt = InstanceData()
            boxes = torch.tensor([[0.08, 0.1, 0.6, 0.64], [0.4, 0.2, 0.96, 0.8]])
            boxes = boxes * torch.tensor([w, h, w, h])
            gt.bboxes = boxes.to(device)
            gt.labels = torch.tensor([3, 7], device=device)
            masks = torch.zeros(2, h, w, dtype=torch.uint8)
            for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                masks[k, y0:y1, x0:x1] = 1
            gt.masks = BitmapMasks(masks.numpy(), h, w)
            s.gt_instances = gt
            samples.append(s)
    model.init_weights()
    model.to(device).train()
    optim_cfg = dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9))
    if amp:
        optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
    optim = build_optim_wrapper(model, optim_cfg)
    return scope, model, optim, dict(inputs=inputs, data_samples=samples)


class SavedBytes:
    """Peak total bytes of the distinct storages held for the backward.

    Every tensor that autograd saves goes through ``pack``, which wraps it in a small
    object; autograd drops that object when it frees the saved tensor (after the backward),
    and the wrapper's finalizer releases the storage. Storages of ``exclude`` (the
    parameters and buffers, alive anyway) are not counted. ``hold`` counts a tensor kept
    outside autograd (the teacher features) until it is garbage.
    """

    def __init__(self, exclude=()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.live = {}
        self.current = self.peak = 0

    def _add(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), str(tensor.device))
        if key[0] in self.exclude or storage.nbytes() == 0:
            return None
        entry = self.live.get(key)
        if entry is None:
            self.live[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        return key

    def _release(self, key) -> None:
        entry = self.live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[key]

    def pack(self, tensor: torch.Tensor):
        key = self._add(tensor)
        if key is None:
            return tensor
        box = _Saved(tensor)
        weakref.finalize(box, self._release, key)
        return box

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Saved) else packed

    def hold(self, tensor: torch.Tensor) -> None:
        key = self._add(tensor)
        if key is not None:
            weakref.finalize(tensor, self._release, key)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Saved:
    __slots__ = ('tensor', '__weakref__')

    def __init__(self, tensor):
        self.tensor = tensor


def make_hooks(kd_mode: str):
    feat_kd = dict(type='SubPathKDLoss', mode=kd_mode)
    return {
        'one_backward': SubPathSpecializationHook(feat_kd=feat_kd, two_backward=False),
        'two_backward': SubPathSpecializationHook(feat_kd=feat_kd, two_backward=True),
    }


def run_step(kind, hooks, model, optim, data, device):
    """One ``model.train_step`` of ``kind``; returns its wall time and this process's CPU
    time (all threads) during it."""
    hook = hooks.get(kind)
    if hook is not None:
        hook.install(model)
    try:
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        model.train_step(dict(data), optim)
        sync(device)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        if hook is not None:
            hook.uninstall()


def measure_saved(kind, hooks, model, optim, data, device) -> float:
    """Peak saved bytes (MiB) of one step of ``kind``."""
    tracker = SavedBytes(list(model.parameters()) + list(model.buffers()))
    hook = hooks.get(kind)
    if hook is not None:  # the teacher that the hook's distiller returns is counted
        distiller = hook.distiller
        super_pass = distiller.super_pass

        def counted_super_pass(*args):
            losses, teacher = super_pass(*args)
            for tensors in teacher.values():
                for t in tensors:
                    tracker.hold(t)
            return losses, teacher

        distiller.super_pass = counted_super_pass
    try:
        with tracker.hooks():
            run_step(kind, hooks, model, optim, data, device)
    finally:
        if hook is not None:
            del distiller.super_pass
    return tracker.peak / 2**20


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def run_only(args, size):
    """Child process of the RSS measurement: 2 steps of one kind."""
    scope, model, optim, data = build(args.task, args.device, args.batch, size, args.amp)
    hooks = make_hooks(args.kd_mode)
    built = peak_rss_mib()
    with DefaultScope.overwrite_default_scope(scope):
        for _ in range(2):
            run_step(args.only, hooks, model, optim, data, args.device)
    print('built_rss_mib', built, 'peak_rss_mib', peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux's ``ru_maxrss`` keeps the peak of the process that
    forked it across ``exec`` (here: the parent benchmark's), so ``VmHWM`` is read first."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rss(args, size, kind):
    """(peak RSS, peak RSS minus the RSS once the model is built) of a fresh process."""
    cmd = [
        sys.executable, __file__, '--task', args.task, '--device', 'cpu', '--batch',
        str(args.batch), '--size',
        str(size[0]),
        str(size[1]), '--kd-mode', args.kd_mode, '--only', kind
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    words = out.split('built_rss_mib')[-1].split()
    built, peak = float(words[0]), float(words[2])
    return peak, peak - built


def ratio(values, kind):
    return values[kind] / values['plain'] if values.get('plain') else float('nan')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=['cls', 'det'], default='cls')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, help='default: cls 8 (cpu) / 64 (cuda), '
                        'det 1 (cpu) / 2 (cuda)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='default: cls 224 224, det 512 512 (cpu) / 800 1333 (cuda)')
    parser.add_argument('--kd-mode', choices=['spatial', 'pooled'], default='spatial',
                        help='feature KD form (SubPathKDLoss mode)')
    parser.add_argument('--amp', action='store_true', help='AmpOptimWrapper (CUDA)')
    parser.add_argument('--no-rss', action='store_true', help='CPU: skip the peak-RSS runs')
    parser.add_argument('--rss-runs', type=int, default=3,
                        help='CPU: fresh processes per step kind for the peak RSS (medians)')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument('--only', choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda: no CUDA device is available here')
    if args.amp and args.device != 'cuda':
        raise SystemExit("error: --amp: mmengine's AmpOptimWrapper needs --device cuda")
    gpu = args.device == 'cuda'
    if args.batch is None:
        args.batch = (64 if gpu else 8) if args.task == 'cls' else (2 if gpu else 1)
    size = tuple(args.size or ((224, 224) if args.task == 'cls' else ((800, 1333) if gpu else
                                                                      (512, 512))))
    if args.only:
        return run_only(args, size)

    scope, model, optim, data = build(args.task, args.device, args.batch, size, args.amp)
    hooks = make_hooks(args.kd_mode)
    times = {k: [] for k in KINDS}
    cpu_times = {k: [] for k in KINDS}
    cuda_peak = {}
    with DefaultScope.overwrite_default_scope(scope):
        for r in range(args.repeats + 1):  # the first round warms up
            for kind in KINDS:
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                dt, ct = run_step(kind, hooks, model, optim, data, args.device)
                if gpu:
                    cuda_peak[kind] = max(cuda_peak.get(kind, 0),
                                          torch.cuda.max_memory_allocated() / 2**20)
                if r > 0:
                    times[kind].append(dt)
                    cpu_times[kind].append(ct)
        saved = {k: measure_saved(k, hooks, model, optim, data, args.device) for k in KINDS}
    median = {k: statistics.median(v) for k, v in times.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu_times.items()}
    rss, step_rss = {}, {}
    if not gpu and not args.no_rss:
        runs = {k: [] for k in KINDS}
        for _ in range(args.rss_runs):  # interleaved: plain, one, two, plain, ...
            for k in KINDS:
                runs[k].append(child_rss(args, size, k))
        rss = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
        step_rss = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}

    header = (f'task={args.task} kd_mode={args.kd_mode} device={args.device} '
              f'batch={args.batch} size={size[0]}x{size[1]} amp={args.amp} '
              f'repeats={args.repeats} torch={torch.__version__} '
              f'threads={torch.get_num_threads()}')
    mem_name, mem = (('CUDA max allocated MiB', cuda_peak) if gpu else ('peak RSS MiB', rss))
    print(header)
    print('| step | median s | time / plain | CPU s | CPU / plain | peak saved MiB | '
          f'saved / plain | {mem_name} | {mem_name.split(" MiB")[0]} / plain |')
    print('|---|---|---|---|---|---|---|---|---|')
    for k in KINDS:
        m = f'{mem[k]:.0f} | {ratio(mem, k):.2f}x' if k in mem else 'n/a | n/a'
        print(f'| {LABELS[k]} | {median[k]:.3f} | {ratio(median, k):.2f}x | '
              f'{cpu_median[k]:.3f} | {ratio(cpu_median, k):.2f}x | {saved[k]:.0f} '
              f'| {ratio(saved, k):.2f}x | {m} |')
    if step_rss:
        print(f'peak RSS minus the RSS of the built model (medians of {args.rss_runs} fresh '
              'processes each): ' +
              ', '.join(f'{k} {step_rss[k]:.0f} MiB ({ratio(step_rss, k):.2f}x)' for k in KINDS))
    t, name = (median, 'wall') if gpu else (cpu_median, 'CPU')
    print(f"goals (two backwards): saved / plain <= 1.10x: "
          f"{ratio(saved, 'two_backward'):.2f}x; {name} time <= one backward's: "
          f"{ratio(t, 'two_backward'):.2f}x vs {ratio(t, 'one_backward'):.2f}x plain")
    if args.json:
        result = dict(task=args.task, kd_mode=args.kd_mode, device=args.device, batch=args.batch,
                      size=list(size), amp=args.amp, repeats=args.repeats, torch=torch.__version__,
                      median_s=median, cpu_median_s=cpu_median, saved_mib=saved, times_s=times,
                      cpu_times_s=cpu_times)
        result['cuda_max_allocated_mib' if gpu else 'peak_rss_mib'] = mem
        if step_rss:
            result['step_rss_mib'] = step_rss
        if gpu:
            result['gpu'] = torch.cuda.get_device_name()
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'written: {args.json}')


if __name__ == '__main__':
    main()
