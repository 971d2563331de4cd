"""The checks that need one CUDA GPU, in one run of at most ``--budget`` seconds (450 by
default: under 8 minutes); started by ``benchmarks/gpu_check.sh``, which documents them.
Classifier parts first, detector parts after; every part runs in its own process and is
stopped at its own time limit (or at what is left of the budget, if that is less). Writes
``gpu_check.json`` and ``gpu_check.md`` (the table) into ``--out`` (default: ``$OUT`` if
set, else ``work_dirs/gpu_check``); the runs themselves go to ``--work-dir``.

    python benchmarks/gpu_check.py [--out DIR] [--work-dir DIR] [--budget SECONDS]

``--cpu-smoke`` runs the same parts on the CPU with tiny sizes and without AMP, to check the
script itself; its figures mean nothing. The exit code is 0 when every part that ran passed
(parts skipped for a stated reason do not count), 1 otherwise, 2 when it could not start.
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import signal
import socket
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_DEMO = 'configs/demo/mask_rcnn_r18_adn_fpn_demo.py'
CLS_DEMO = 'configs/demo/resnet18_adn_demo.py'
R50_ADN = 'configs/imagenet/resnet50_adn_8xb32_in1k.py'
BENCH_COMPILE = 'benchmarks/bench_compile.py'
DEFAULT_BUDGET = 450
MIN_START = 10  # seconds: a part is not started with less than this left of the budget
# (name, group, seconds allowed on the GPU, seconds allowed in the CPU smoke run)
PARTS = (
    ('data', 'setup', 40, 240),
    ('amp_train_cls', 'classifier', 60, 300),
    ('amp_step', 'classifier', 45, 240),
    ('bench_cls', 'classifier', 80, 300),
    ('profile_r50', 'classifier', 50, 300),
    ('bench_compile', 'classifier', 90, 300),
    ('probe_ops', 'detector', 25, 120),
    ('amp_train_det', 'detector', 70, 300),
    ('bench_det', 'detector', 80, 300),
    ('nccl_step', 'detector', 60, 300),
)
LIMITS = {name: (gpu, smoke) for name, _, gpu, smoke in PARTS}
# what the parts import beyond torch; on the GPU machine they come from the wheel bundle
NEEDED = ('mmcv', 'mmengine', 'mmdet', 'mmpretrain', 'pycocotools', 'pkg_resources', 'mmadn')
# small generated data: the checks train a few iterations, they measure no accuracy
DET_DATA = dict(num_train=64, num_val=16)
CLS_DATA = dict(num_train_per_class=16, num_val_per_class=8)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'{text!r}: expected a positive number of seconds')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out', default=None,
        help='folder of gpu_check.json and gpu_check.md (default: $OUT if set, '
        'else work_dirs/gpu_check)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'gpu_check'),
                        help='folder of the runs, their data and logs')
    parser.add_argument(
        '--budget', type=positive_seconds, default=None,
        help=f'seconds for all parts together (default {DEFAULT_BUDGET}; '
        'no limit with --cpu-smoke)')
    parser.add_argument(
        '--cpu-smoke', action='store_true',
        help='the same parts on the CPU, tiny sizes, no AMP (figures mean '
        'nothing)')
    # one part in this process (what the driver starts for amp_step and probe_ops)
    parser.add_argument('--part', choices=['amp_step', 'probe_ops'], help=argparse.SUPPRESS)
    parser.add_argument('--device', choices=['cpu', 'cuda'], help=argparse.SUPPRESS)
    parser.add_argument('--json', help=argparse.SUPPRESS)
    parser.add_argument('--amp', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part and not (args.device and args.json):
        parser.error('--part needs --device and --json')
    return args


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def missing_modules() -> list:
    """The modules of NEEDED that do not import from here (checked without importing)."""
    sys.path.insert(0, ROOT)
    try:
        return [m for m in NEEDED if importlib.util.find_spec(m) is None]
    finally:
        sys.path.remove(ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# running a part: its own process (group), stopped at its time limit
# ------------------------------------------------------------------------------------------
def run(cmd, timeout, log_path=None, env=None):
    """Run ``python CMD`` from the repository root in a new process group; at ``timeout``
    seconds the whole group (torchrun's workers too) is killed. Returns (status, seconds,
    last lines of its output) with status 'ok', 'failed' or 'timed out'."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    full_env.update(env or {})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable] + list(cmd), cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = 'ok' if proc.returncode == 0 else 'failed'
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        status = 'timed out'
    seconds = time.perf_counter() - t0
    if log_path:
        with open(log_path, 'w') as f:
            f.write(out or '')
    tail = '\n'.join((out or '').strip().splitlines()[-15:])
    if status == 'timed out':
        tail = f'stopped at its time limit of {timeout:.0f} s\n{tail}'
    return status, seconds, tail


class Context:
    """What every part needs: device, sizes, folders, its time limit."""

    def __init__(self, smoke: bool, work_dir: str):
        self.smoke = smoke
        self.device = 'cpu' if smoke else 'cuda'
        self.amp = not smoke
        self.work_dir = work_dir  # relative to ROOT (or absolute)
        self.iters = 2 if smoke else 20
        self.det_data = osp.join(work_dir, 'data', 'demo_shapes')
        self.cls_data = osp.join(work_dir, 'data', 'demo_shapes_cls')
        self.limit = None  # set per part by the driver

    def path(self, *parts) -> str:
        return osp.join(self.work_dir, *parts)

    def log(self, name) -> str:
        return osp.join(ROOT, self.work_dir, 'logs', name + '.log')

    def run(self, name, cmd, env=None):
        return run(cmd, self.limit, self.log(name), env)


# ------------------------------------------------------------------------------------------
# the parts; each returns a dict with 'status' ('ok' / 'failed' / 'timed out' / 'skipped')
# ------------------------------------------------------------------------------------------
def part_data(ctx):
    """The small generated data sets of the two demos (mmadn.datasets.demo_shapes)."""
    code = ('import sys; from mmadn.datasets import ensure_demo_shapes, ensure_demo_shapes_cls; '
            f'ensure_demo_shapes({osp.join(ROOT, ctx.det_data)!r}, **{DET_DATA!r}); '
            f'ensure_demo_shapes_cls({osp.join(ROOT, ctx.cls_data)!r}, **{CLS_DATA!r})')
    status, seconds, tail = ctx.run('data', ['-W', 'ignore', '-c', code])
    result = dict(status=status, seconds=round(seconds, 1), det=DET_DATA, cls=CLS_DATA)
    if status != 'ok':
        result['output_tail'] = tail
    return result


def train_overrides(ctx, task, work_dir):
    iters = ctx.iters
    common = [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        'default_hooks.logger.interval=1', f'default_hooks.checkpoint.interval={iters}'
    ]
    if task == 'cls':
        root = ctx.cls_data
        return common + [
            f'{k}.dataset.data_root={root}'
            for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        ]
    root = ctx.det_data.rstrip('/') + '/'
    ann = f'{root}annotations/instances_val.json'
    return common + ['model.backbone.init_cfg=None',  # no pretrained classifier there
                     f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'] + \
        [f'{k}.dataset.data_root={root}' for k in
         ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def read_scalars(work_dir):
    rows = []
    for dirpath, _, files in os.walk(osp.join(ROOT, work_dir)):
        if 'scalars.json' in files and osp.basename(dirpath) == 'vis_data':
            with open(osp.join(dirpath, 'scalars.json')) as f:
                rows += [json.loads(line) for line in f if line.strip()]
    return rows


def train_result(status, seconds, tail, rows, iters):
    result = dict(status=status, seconds=round(seconds, 1))
    train_rows = [r for r in rows if 'loss' in r]
    losses = [v for r in train_rows for k, v in r.items() if 'loss' in k]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    result.update(iters_logged=len(train_rows), losses_finite=finite)
    if train_rows:
        last = train_rows[-1]
        result.update(first_loss=train_rows[0]['loss'], last_loss=last['loss'],
                      last_loss_kd_feat=last.get('loss_kd_feat'))
    result['val'] = {k: v for r in rows for k, v in r.items() if '/' in k and 'loss' not in k}
    if status == 'ok' and not (finite and len(train_rows) == iters):
        result['status'] = 'failed'
        result['reason'] = (f'{len(train_rows)} of {iters} iterations logged, losses finite: '
                            f'{finite}')
    if result['status'] != 'ok':
        result['output_tail'] = tail
    return result


def amp_train(ctx, name, config, task):
    """``tools/train.py --amp`` for a few iterations; the logged losses must be finite."""
    work_dir = ctx.path(name)
    cmd = ['tools/train.py', config, '--work-dir', work_dir, '--cfg-options'] + \
        train_overrides(ctx, task, work_dir)
    if ctx.amp:
        cmd.insert(2, '--amp')
    status, seconds, tail = ctx.run(name, cmd)
    return train_result(status, seconds, tail, read_scalars(work_dir), ctx.iters)


def part_amp_train_cls(ctx):
    return amp_train(ctx, 'amp_train_cls', CLS_DEMO, 'cls')


def part_amp_train_det(ctx):
    return amp_train(ctx, 'amp_train_det', DET_DEMO, 'det')


def in_process(ctx, name, amp=False):
    """Start this script for one part (``--part``) and read the JSON it writes."""
    out_json = ctx.path(name + '.json')
    cmd = ['benchmarks/gpu_check.py', '--part', name, '--device', ctx.device, '--json', out_json
           ] + (['--amp'] if amp else [])
    status, seconds, tail = ctx.run(name, cmd)
    result = dict(status=status, seconds=round(seconds, 1))
    if status == 'ok':
        with open(osp.join(ROOT, out_json)) as f:
            result.update(json.load(f))
    if result['status'] != 'ok':
        result['output_tail'] = tail
    return result


def part_amp_step(ctx):
    return in_process(ctx, 'amp_step', amp=ctx.amp)


def part_probe_ops(ctx):
    return in_process(ctx, 'probe_ops')


def bench(ctx, name, task, batch, size, repeats):
    out_json = ctx.path(name + '.json')
    cmd = [
        'benchmarks/bench_train_step.py', '--task', task, '--device', ctx.device, '--batch',
        str(batch), '--size',
        str(size[0]),
        str(size[1]), '--repeats',
        str(repeats), '--no-rss', '--json', out_json
    ]
    status, seconds, tail = ctx.run(name, cmd)
    result = dict(status=status, seconds=round(seconds, 1))
    if status == 'ok':
        with open(osp.join(ROOT, out_json)) as f:
            result.update(json.load(f))
        result.pop('times_s', None)
        result.pop('cpu_times_s', None)
    else:
        result['output_tail'] = tail
    return result


def part_bench_cls(ctx):
    return bench(ctx, 'bench_cls', 'cls', 2 if ctx.smoke else 64, (64, 64) if ctx.smoke else
                 (224, 224), 1 if ctx.smoke else 5)


def part_bench_det(ctx):
    return bench(ctx, 'bench_det', 'det', 1 if ctx.smoke else 2, (128, 128) if ctx.smoke else
                 (800, 1333), 1 if ctx.smoke else 5)


def part_profile_r50(ctx):
    """profile_subnets.py on ResNet-50-ADN: the latency cut of TTTT against its GFLOPs cut."""
    batch, size = (2, 64) if ctx.smoke else (64, 224)
    stem = ctx.path('profile_r50')
    cmd = [
        'tools/analysis_tools/profile_subnets.py', R50_ADN, '--device', ctx.device, '--batch-size',
        str(batch), '--shape',
        str(size),
        str(size), '--skips', 'FFFF,TTTT', '--repeats', '2' if ctx.smoke else '20', '--warmup', '3',
        '--out', stem
    ]
    status, seconds, tail = ctx.run('profile_r50', cmd)
    result = dict(status=status, seconds=round(seconds, 1), batch=batch, size=size)
    if status == 'ok':
        with open(osp.join(ROOT, stem + '.json')) as f:
            rows = {r['skip']: r for r in json.load(f)}
        full, base = rows['FFFF'], rows['TTTT']
        g = base['gflops'] / full['gflops']
        t = base['latency_ms'] / full['latency_ms']
        result.update(gflops=dict(FFFF=full['gflops'], TTTT=base['gflops']),
                      latency_ms=dict(FFFF=full['latency_ms'],
                                      TTTT=base['latency_ms']), gflops_ratio=g, latency_ratio=t,
                      cut_ratio=(1 - t) / (1 - g), paper_cut_ratio=0.97)
    else:
        result['output_tail'] = tail
    return result


def part_bench_compile(ctx):
    """The compile benchmark's classifier part (ResNet-50-ADN at batch 8, 3 rounds):
    ``benchmarks/bench_compile.py --device cuda --part cls --out STEM``."""
    stem = ctx.path('bench_compile')
    # the smoke run compiles the same classifier on the CPU, at a tiny input, once per depth
    sizes = ['--batch', '1', '--size', '64', '--rounds', '1', '--switch-rounds', '1'] \
        if ctx.smoke else ['--batch', '8', '--rounds', '3']
    status, seconds, tail = ctx.run(
        'bench_compile',
        [BENCH_COMPILE, '--device', ctx.device, '--part', 'cls', '--out', stem] + sizes)
    result = dict(status=status, seconds=round(seconds, 1))
    if status == 'ok' and osp.isfile(osp.join(ROOT, stem + '.json')):
        with open(osp.join(ROOT, stem + '.json')) as f:
            result['figures'] = json.load(f)
    if status != 'ok':
        result['output_tail'] = tail
    return result


def part_nccl_step(ctx):
    """Two ranks of ``tools/train.py --launcher pytorch`` on the demo detector: NCCL on two
    GPUs (gloo on the CPU in the smoke run); the logged losses must be finite."""
    if not ctx.smoke:
        import torch
        n = torch.cuda.device_count()
        if n < 2:
            return dict(status='skipped',
                        reason=f'2 ranks need 2 CUDA devices; this machine has {n}')
    name, work_dir = 'nccl_step', ctx.path('nccl_step')
    overrides = train_overrides(ctx, 'det', work_dir)
    overrides.append(f"env_cfg.dist_cfg.backend={'gloo' if ctx.smoke else 'nccl'}")
    cmd = [
        '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
        str(free_port()), 'tools/train.py', DET_DEMO, '--launcher', 'pytorch', '--work-dir',
        work_dir, '--cfg-options'
    ] + overrides
    status, seconds, tail = ctx.run(name, cmd, env={'OMP_NUM_THREADS': '1'})
    result = train_result(status, seconds, tail, read_scalars(work_dir), ctx.iters)
    result['backend'] = 'gloo' if ctx.smoke else 'nccl'
    return result


RUNNERS = dict(data=part_data, amp_train_cls=part_amp_train_cls, amp_step=part_amp_step,
               bench_cls=part_bench_cls, profile_r50=part_profile_r50,
               bench_compile=part_bench_compile, probe_ops=part_probe_ops,
               amp_train_det=part_amp_train_det, bench_det=part_bench_det, nccl_step=part_nccl_step)


# ------------------------------------------------------------------------------------------
# the parts that run in a process of their own (--part)
# ------------------------------------------------------------------------------------------
def amp_step(device, amp):
    """One training iteration of the tiny classifier under ``AmpOptimWrapper``, one and two
    backwards from the same weights: the KD losses must be fp32 while the features are
    fp16, and the two steps must agree (the loss scaler scales both backwards)."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    import mmadn  # noqa: F401
    from mmadn.engine.hooks import SubPathSpecializationHook

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    cfg = Config.fromfile(osp.join(ROOT, CLS_DEMO))
    cfg.model.backbone.zero_init_residual = False
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.to(device).train()
        g = torch.Generator().manual_seed(0)
        data = dict(
            inputs=[
                torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(8)
            ], data_samples=[DataSample().set_gt_label(k % 4) for k in range(8)])
        init = {n: p.detach().clone() for n, p in model.named_parameters()}
        result, params = {}, {}
        for two_backward in (False, True):
            m = copy.deepcopy(model)
            optim_cfg = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
            if amp:  # a fixed scale: a dynamic one may skip the first step (inf grads)
                optim_cfg.update(type='AmpOptimWrapper', loss_scale=512.0)
            optim = build_optim_wrapper(m, optim_cfg)
            dtypes = {}

            def record_dtype(_module, _inputs, out):
                dtypes.setdefault('features', str(out.dtype))  # returns None: output kept

            handle = m.backbone.layer4.register_forward_hook(record_dtype)
            hook = SubPathSpecializationHook(two_backward=two_backward)
            hook.install(m)
            torch.manual_seed(0)
            log_vars = m.train_step(copy.deepcopy(data), optim_wrapper=optim)
            hook.uninstall()
            handle.remove()
            name = 'two_backward' if two_backward else 'one_backward'
            result[name] = dict(
                features_dtype=dtypes['features'],
                kd_dtypes={k: str(log_vars[k].dtype)
                           for k in ('loss_kd_feat', 'loss_kd_logits')}, losses={
                               k: float(v)
                               for k, v in log_vars.items()
                           })
            params[name] = {n: p.detach() for n, p in m.named_parameters()}
    update = max((params['one_backward'][n] - init[n]).abs().max().item() for n in init)
    diff = max(
        (params['two_backward'][n] - params['one_backward'][n]).abs().max().item() for n in init)
    result['amp'] = amp
    result['max_update'], result['rel_diff'] = update, diff / max(update, 1e-30)
    finite = all(
        math.isfinite(v) for r in (result['one_backward'], result['two_backward'])
        for v in r['losses'].values())
    fp32_kd = all(d == 'torch.float32' for r in (result['one_backward'], result['two_backward'])
                  for d in r['kd_dtypes'].values())
    fp16_feats = result['two_backward']['features_dtype'] == 'torch.float16'
    ok = (finite and fp32_kd and (fp16_feats or not amp) and update > 0
          and result['rel_diff'] < 1e-2)
    result['status'] = 'ok' if ok else 'failed'
    if not ok:
        result['reason'] = (f'losses finite: {finite}, KD fp32: {fp32_kd}, features fp16: '
                            f'{fp16_feats} (AMP: {amp}), update {update:.2e}, two vs one '
                            f'backward {result["rel_diff"]:.2e} of it (must be < 1e-2)')
    return result


def probe_ops(device):
    """mmcv's ops that Mask R-CNN uses (nms, RoIAlign) on ``device``: the detector parts
    need them there."""
    import mmcv
    import mmcv.ops
    import torch
    from mmcv.ops import RoIAlign, nms
    compiled = mmcv.ops.get_compiling_cuda_version()
    result = dict(mmcv=mmcv.__version__, compiled_with_cuda=compiled)
    try:
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]],
                             device=device)
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)
        feats = torch.arange(64., device=device).view(1, 1, 8, 8)
        rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
        pooled = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
        ok = keep.tolist() == [0, 2] and pooled.shape == (1, 1, 2, 2)
        result.update(status='ok' if ok else 'failed', nms_keep=keep.tolist(),
                      roi_align=pooled.flatten().tolist())
    except Exception as err:  # the reason the detector parts are skipped
        result.update(
            status='failed', reason=f'{type(err).__name__}: '
            f'{str(err).strip().splitlines()[0] if str(err).strip() else ""}')
    return result


def run_part(args):
    if args.part == 'amp_step':
        result = amp_step(args.device, args.amp)
    else:
        result = probe_ops(args.device)
    with open(args.json, 'w') as f:
        json.dump(result, f, indent=1)
    return 0


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def _ratios(r, key):
    v = r.get(key) or {}
    if 'plain' not in v:
        return 'n/a'
    return ' / '.join(f"{v[k] / v['plain']:.2f}" for k in ('plain', 'one_backward', 'two_backward'))


def figures(name, r) -> str:
    """One line of figures for a part that ran to its end."""
    if name == 'data':
        return f"detection {r['det']}, classification {r['cls']}"
    if name in ('amp_train_cls', 'amp_train_det', 'nccl_step'):
        text = (f"{r.get('iters_logged', 0)} iterations, losses finite: "
                f"{r.get('losses_finite')}, loss {r.get('first_loss', float('nan')):.3f} -> "
                f"{r.get('last_loss', float('nan')):.3f}")
        return text + (f", backend {r['backend']}" if 'backend' in r else '')
    if name == 'amp_step':
        two = r['two_backward']
        return (f"AMP {r['amp']}: features {two['features_dtype']}, KD "
                f"{sorted(set(two['kd_dtypes'].values()))}, two vs one backward: max diff "
                f"{r['rel_diff']:.2e} of the update")
    if name in ('bench_cls', 'bench_det'):
        mem = r.get('cuda_max_allocated_mib')
        mem_text = (f"CUDA max allocated {_ratios(r, 'cuda_max_allocated_mib')} (plain "
                    f"{mem['plain']:.0f} MiB), " if mem else '')
        return (f"batch {r['batch']} at {r['size'][0]}x{r['size'][1]}; plain / one / two "
                f"backward: time {_ratios(r, 'median_s')}, {mem_text}saved tensors "
                f"{_ratios(r, 'saved_mib')}")
    if name == 'profile_r50':
        return (f"batch {r['batch']}, TTTT / FFFF: GFLOPs x{r['gflops_ratio']:.3f}, latency "
                f"x{r['latency_ratio']:.3f}: latency cut = {r['cut_ratio']:.2f} x the GFLOPs "
                f"cut (the paper: 0.97)")
    if name == 'probe_ops':
        return f"mmcv {r['mmcv']} (CUDA {r['compiled_with_cuda']}): nms and RoIAlign ran"
    if name == 'bench_compile' and r.get('figures'):
        (part, ) = r['figures']['results']
        ratios = [row['ratio'] for row in part['rows']]
        return (f"{part['graphs']} graph(s) for {len(ratios)} depths, {part['eager_fallbacks']} "
                f"eager fallback(s), {part['graphs_after_warmup']} graph(s) after the warm-up; "
                f"first call {part['rows'][0]['first_call_s']:.1f} s; compiled / eager "
                f"{min(ratios):.2f}-{max(ratios):.2f}")
    return ''


def table(report) -> str:
    lines = ['| part | figures | seconds (limit) | result |', '|---|---|---|---|']
    for name, r in report['parts'].items():
        status = r['status']
        if status == 'ok':
            try:
                text = figures(name, r)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                text = f'(figures incomplete: {type(err).__name__} {err})'
        else:
            text = r.get('reason') or (r.get('output_tail') or '').splitlines()[-1:] or ''
            text = text if isinstance(text, str) else ' '.join(text)
        text = text.replace('|', '/').replace('\n', ' ')
        sec = f"{r['seconds']} ({r['limit_s']:.0f})" if 'seconds' in r else ''
        lines.append(f'| {name} | {text} | {sec} | {status} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.part:
        return run_part(args)
    if not args.cpu_smoke and not cuda_available():
        print(
            'gpu_check: no CUDA device is available here (torch.cuda.is_available() is '
            'False); run it on a machine with one CUDA GPU', file=sys.stderr)
        return 2
    missing = missing_modules()
    if missing:
        print(
            f"gpu_check: {', '.join(missing)} not importable with {sys.executable} "
            f"(Python {platform.python_version()}); on the GPU machine run "
            'benchmarks/gpu_check.sh --bundle DIR with a bundle made by tools/gpu_bundle.sh, '
            'elsewhere set up the project first (tools/bootstrap.sh)', file=sys.stderr)
        return 2
    import torch
    smoke = args.cpu_smoke
    out = args.out or os.environ.get('OUT') or osp.join('work_dirs', 'gpu_check')
    budget = args.budget or (None if smoke else DEFAULT_BUDGET)
    ctx = Context(smoke, args.work_dir)
    os.makedirs(osp.join(ROOT, out), exist_ok=True)
    os.makedirs(osp.dirname(ctx.log('x')), exist_ok=True)
    report = dict(device='cpu' if smoke else torch.cuda.get_device_name(),
                  cuda_devices=0 if smoke else torch.cuda.device_count(), torch=torch.__version__,
                  cuda=torch.version.cuda, python=platform.python_version(), cpu_smoke=smoke,
                  budget_s=budget, parts={})
    parts = report['parts']
    t_all = time.perf_counter()
    detector_skip = None
    for name, group, gpu_limit, smoke_limit in PARTS:
        own = smoke_limit if smoke else gpu_limit
        left = None if budget is None else budget - (time.perf_counter() - t_all)
        if group == 'detector' and detector_skip:
            parts[name] = dict(status='skipped', reason=detector_skip)
            continue
        if left is not None and left < MIN_START:
            parts[name] = dict(status='not started',
                               reason=f'{max(left, 0):.0f} s left of the {budget:.0f} s budget')
            continue
        ctx.limit = own if left is None else min(own, left)
        print(f'[gpu_check] {name} (at most {ctx.limit:.0f} s) ...', flush=True)
        try:
            result = RUNNERS[name](ctx)
        except Exception as err:  # a broken part is reported; the others still run
            result = dict(status='failed', reason=f'{type(err).__name__}: {err}')
        result['limit_s'] = round(ctx.limit, 1)
        parts[name] = result
        print(
            f"[gpu_check] {name}: {result['status']}"
            f"{': ' + result['reason'] if result.get('reason') else ''}", flush=True)
        if name == 'probe_ops' and result['status'] != 'ok':
            detector_skip = ("mmcv's ops do not run on this device "
                             f"({result.get('reason') or result['status']}; mmcv compiled with "
                             f"CUDA: {result.get('compiled_with_cuda', '?')}): the detector "
                             'parts need a bundle with CUDA ops (tools/gpu_bundle.sh, '
                             'MMADN_BUNDLE_CUDA=1)')
            print(f'[gpu_check] detector parts skipped: {detector_skip}', flush=True)
    report['seconds'] = round(time.perf_counter() - t_all, 1)
    report['ok'] = all(r['status'] in ('ok', 'skipped') for r in parts.values())
    if detector_skip:
        report['detector_skipped'] = detector_skip
    json_path = osp.join(ROOT, out, 'gpu_check.json')
    with open(json_path, 'w') as f:
        json.dump(report, f, indent=1)
    head = (f"gpu_check on {report['device']} (torch {report['torch']}, Python "
            f"{report['python']}), {report['seconds']} s"
            f"{' (CPU smoke run: figures mean nothing)' if smoke else ''}")
    text = table(report)
    with open(osp.join(ROOT, out, 'gpu_check.md'), 'w') as f:
        f.write(head + '\n\n' + text + '\n')
    print(head)
    print(text)
    for name, r in parts.items():
        if r['status'] in ('failed', 'timed out') and r.get('output_tail'):
            print(f'\n{name} output (last lines; whole log: {ctx.log(name)}):\n'
                  f'{r["output_tail"]}')
    print(f'written: {json_path} and gpu_check.md beside it')
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
