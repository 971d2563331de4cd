"""Small-scale study of RTMDet-ADN: adaptive depth for a real-time detector, trained from
scratch on the generated demo_shapes data (``configs/demo/rtmdet_cspnext_adn_demo.py``).

Compared, each through mmengine's Runner and tested with mmdet's ``CocoMetric``:

- ``plain``: RTMDet trained normally (``CSPNeXtADN`` without skip-aware norms and without
  the hook computes exactly mmdet's ``CSPNeXt``); its sub-networks are naive skipping of a
  normally trained network. Run with two seeds: the run-to-run noise.
- ``adn``: RTMDet-ADN, the demo config (sub-path specialization, the authors' detection
  recipe, skip-aware norms).
- ``base``: an RTMDet whose backbone has the base-net's blocks per stage (mmdet's
  ``CSPNeXt`` with ``arch_ovewrite``), trained normally.
- ``adn_neck``: ``adn`` with the skippable neck (``CSPNeXtPAFPNADN``: residual CSP layers,
  4 more flags).

The JSON is saved after every run; an interrupted study resumes from it (same settings).

    python studies/study_rtmdet.py --threads 1       # the study (about 20 CPU-minutes)
    python studies/study_rtmdet.py --quick           # smoke mode: a few iterations
    python studies/study_rtmdet.py --report-only     # rewrite the report from the JSON

Writes ``<out>/study_rtmdet.md``, ``study_rtmdet_map.png`` and ``study_rtmdet.json``.
"""
import argparse
import copy
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import study_common as sc  # noqa: E402

DEMO = osp.join(sc.ROOT, 'configs', 'demo', 'rtmdet_cspnext_adn_demo.py')
METRIC = 'coco/bbox_mAP'
NECK_FLAGS = 4
#: variant -> (what it is, seeds it runs by default)
VARIANTS = {
    'plain':
    'RTMDet trained normally; its sub-networks are naive skipping',
    'adn':
    "RTMDet-ADN: sub-path specialization (the authors' detection recipe: "
    'alpha det(super) + (1 - alpha) (det(base) + KD of the pooled PAFPN outputs)) + '
    'skip-aware norms, mmdet\'s PAFPN',
    'base':
    "RTMDet whose backbone has the base-net's blocks per stage, trained normally",
    'adn_neck':
    '`adn` with the skippable neck (CSPNeXtPAFPNADN: residual CSP layers, the '
    'second block of each skippable)',
}
DEFAULT_RUNS = [('plain', 0), ('plain', 1), ('adn', 0), ('base', 0), ('adn_neck', 0)]
RESUME_KEYS = ('iters', 'num_train', 'num_val', 'quick', 'threads')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help='smoke mode: a few iterations, 16 + 8 images (numbers meaningless)')
    p.add_argument('--iters', type=int, default=None,
                   help="training iterations (default: the demo config's)")
    p.add_argument('--num-train', type=int, default=200, help='generated training images')
    p.add_argument('--num-val', type=int, default=50, help='generated test images')
    p.add_argument('--data-root', default=None,
                   help='default: data/demo_shapes_study_<num-train>_<num-val>')
    p.add_argument(
        '--runs', nargs='+', default=[f'{v}:{s}' for v, s in DEFAULT_RUNS],
        help='variant:seed pairs, run in this order (variants: '
        f'{", ".join(VARIANTS)})')
    p.add_argument('--work-dir', default=osp.join(sc.ROOT, 'work_dirs', 'study_rtmdet'))
    p.add_argument('--out', default=osp.join(sc.ROOT, 'studies', 'results'))
    p.add_argument('--threads', type=int, default=None, help="torch threads (default torch's)")
    p.add_argument('--fresh', action='store_true', help='start over instead of resuming')
    p.add_argument('--report-only', action='store_true',
                   help='rewrite the report and the plot from <out>/study_rtmdet.json')
    args = p.parse_args(argv)
    runs = []
    for item in args.runs:
        variant, _, seed = item.partition(':')
        if variant not in VARIANTS or not seed.isdigit():
            raise SystemExit(f'--runs {item!r}: expected VARIANT:SEED with VARIANT one of '
                             f'{list(VARIANTS)}, e.g. adn:0')
        runs.append((variant, int(seed)))
    args.runs = runs
    if args.quick:
        args.iters = min(args.iters or 4, 4)
        args.num_train, args.num_val = min(args.num_train, 16), min(args.num_val, 8)
    if args.iters is None:
        from mmengine.config import Config
        args.iters = Config.fromfile(DEMO).train_cfg.max_iters
    if args.data_root is None:
        args.data_root = osp.join(sc.ROOT, 'data',
                                  f'demo_shapes_study_{args.num_train}_{args.num_val}')
    return args


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------
def demo_cfg(args):
    """The demo config on the study's data and schedule, without validation or
    checkpoints."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO)
    root = args.data_root.rstrip('/') + '/'
    gen = dict(num_train=args.num_train, num_val=args.num_val)
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.update(data_root=root, generator_kwargs=gen)
    cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.update(max_iters=args.iters, val_interval=args.iters + 1)
    for s in cfg.param_scheduler:
        for key in ('begin', 'end', 'T_max'):
            if key in s:
                s[key] = max(0 if key == 'begin' else 1, round(s[key] * args.iters / old))
    cfg.param_scheduler[1].eta_min = cfg.optim_wrapper.optimizer.lr * 0.05
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, args.iters // 4))
    return cfg


def backbone_skips(n: int):
    from mmadn.models.layers.skip import enumerate_skips, format_skip
    return [format_skip(s) for s in enumerate_skips(n)]


def variant_cfg(base_cfg, variant: str):
    """``base_cfg`` (the demo config) set up as ``variant``; its test runs every
    sub-network (``adn_neck``: each backbone depth with the neck whole and skipped)."""
    cfg = copy.deepcopy(base_cfg)
    n = len(base_skip(cfg))
    if variant == 'plain':
        cfg.model.backbone.skip_aware_norms = False
        cfg.custom_hooks = []
    if variant == 'base':
        from mmdet.registry import MODELS
        from mmengine.registry import init_default_scope

        import mmadn  # noqa: F401
        init_default_scope('mmdet')
        adn = MODELS.build(copy.deepcopy(cfg.model.backbone))
        cfg.model.backbone = adn.static_cfg(cfg.model.backbone, 'base')
        cfg.custom_hooks = []
        cfg.test_cfg = dict(type='TestLoop')
        return cfg
    skips = backbone_skips(n)
    if variant == 'adn_neck':
        cfg.model.neck.type = 'CSPNeXtPAFPNADN'
        skips = [s + neck for neck in ('F' * NECK_FLAGS, 'T' * NECK_FLAGS) for s in skips]
    cfg.test_cfg = dict(type='SubnetTestLoop', skips=','.join(skips), profile=False)
    return cfg


def base_skip(cfg) -> str:
    """``'TTT'``: the base-net of the demo backbone (one letter per skippable stage)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmadn  # noqa: F401
    init_default_scope('mmdet')
    return MODELS.build(copy.deepcopy(cfg.model.backbone)).set_skip('base').skip_str


def feature_gflops(cfg, skips, size: int):
    """GFLOPs of the backbone + neck (``extract_feat``) per sub-network, one image of
    ``size`` px (mmengine's FlopAnalyzer)."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmadn.analysis import count_flops
    from mmadn.models import find_adn_backbone
    init_default_scope('mmdet')
    model = MODELS.build(copy.deepcopy(cfg.model)).eval()
    x = torch.zeros(1, 3, size, size)
    backbone = find_adn_backbone(model, required=False)
    if backbone is None:
        return {'static': count_flops(model, x, model.extract_feat) / 1e9}
    out = {}
    for skip in skips:
        with backbone.skipping(skip):
            out[skip] = count_flops(model, x, model.extract_feat) / 1e9
    return out


# ----------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------
def load_or_new(args, json_path: str) -> dict:
    setup = {k: getattr(args, k) for k in RESUME_KEYS}
    setup['command'] = 'python studies/study_rtmdet.py ' + ' '.join(sys.argv[1:])
    data = dict(setup=setup, runs=[], gflops={})
    if args.fresh or not osp.isfile(json_path):
        return data
    with open(json_path) as f:
        old = json.load(f)
    if {k: old['setup'].get(k) for k in RESUME_KEYS} != {k: setup[k] for k in RESUME_KEYS}:
        raise SystemExit(f'{json_path} holds a study with other settings; pass --fresh to start '
                         'over, or --out DIR to keep both')
    print(f'[study_rtmdet] resuming {json_path}: {len(old["runs"])} run(s) done', flush=True)
    return old


def run_study(args, json_path: str) -> dict:
    import mmadn  # noqa: F401
    from mmadn.datasets import ensure_demo_shapes
    data = load_or_new(args, json_path)
    base = demo_cfg(args)
    ensure_demo_shapes(base.train_dataloader.dataset.data_root, num_train=args.num_train,
                       num_val=args.num_val)
    B = base_skip(base)
    data.update(super_skip='F' * len(B), base_skip=B)
    t_start, cpu_start = time.perf_counter(), sc.cpu_seconds()
    wall0, cpu_before = data.get('wall_s', 0.0), data.get('cpu_s', 0.0)
    for variant, seed in args.runs:
        if any((r['variant'], r['seed']) == (variant, seed) for r in data['runs']):
            continue
        cfg = variant_cfg(base, variant)
        if variant not in data['gflops']:
            skips = cfg.test_cfg.get('skips', '').split(',') if 'skips' in cfg.test_cfg else []
            data['gflops'][variant] = {
                str(size): feature_gflops(cfg, skips, size)
                for size in (96, 640)
            }
        cpu0 = sc.cpu_seconds()
        results, _, times = sc.run_variant(cfg, osp.join(args.work_dir, f'{variant}_seed{seed}'),
                                           seed)
        run = dict(variant=variant, seed=seed, results=results, base_skip=B,
                   cpu_s=sc.cpu_seconds() - cpu0, **times)
        data['runs'].append(run)
        shown = {k: round(v.get(METRIC, float('nan')), 3) for k, v in results.items()}
        print(f'[study_rtmdet] {variant} seed {seed}: {shown} ({run["cpu_s"]:.0f} CPU s)',
              flush=True)
        data.update(wall_s=wall0 + time.perf_counter() - t_start,
                    cpu_s=cpu_before + sc.cpu_seconds() - cpu_start)
        sc.save_json(data, json_path)
    data['complete'] = all(
        any((r['variant'], r['seed']) == run for r in data['runs']) for run in args.runs)
    sc.save_json(data, json_path)
    return data


# ----------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------
def mean_of(runs, variant, skip):
    vals = sc.values(runs, variant, skip, METRIC)
    return sc.mean_std(vals), vals


def noise(runs, S: str, B: str) -> float:
    """The run-to-run noise: the largest standard deviation over seeds of the variants
    that ran more than once (super-net and base-net)."""
    stds = []
    for v in {r['variant'] for r in runs}:
        for skip in (S, B):
            vals = sc.values(runs, v, skip, METRIC)
            if len(vals) > 1:
                stds.append(sc.mean_std(vals)[1])
    return max(stds) if stds else float('nan')


def precondition(runs, S: str, B: str):
    """``(holds, sentence)``: naive skipping must lose more than twice the noise."""
    (ms, _), sup = mean_of(runs, 'plain', S)
    (mb, _), naive = mean_of(runs, 'plain', B)
    if not sup or not naive:
        return None, 'not measured yet (the `plain` variant has not run).'
    n = noise(runs, S, B)
    drop = ms - mb
    if n != n:  # nan: one seed only
        return None, (f'naive skipping loses {drop:.3f} bbox mAP ({ms:.3f} -> {mb:.3f}); one '
                      'seed, so no noise estimate.')
    holds = drop > 2 * n
    return holds, (
        f'naive skipping of the plain RTMDet loses {drop:.3f} bbox mAP ({ms:.3f} -> {mb:.3f}, '
        f'`{S}` -> `{B}`) against a run-to-run noise (largest std over seeds) of {n:.3f}: ' +
        ('more than twice the noise, so this scale can tell the models apart.'
         if holds else '**not more than twice the noise: this scale cannot test the claims.**'))


def verdicts(runs, S: str, B: str):
    """``(claim, A, B, A - B, verdict)`` rows. A "beats" claim holds when A is ahead by
    more than the noise; a "matches" claim when A is not behind by more than the noise."""
    n = noise(runs, S, B)
    nS, nB = S + 'F' * NECK_FLAGS, B + 'T' * NECK_FLAGS
    pairs = [
        ('ADN base-net beats naive skipping of the plain network', 'beats', ('adn', B), ('plain',
                                                                                         B)),
        ('ADN base-net beats the individually trained base-depth network', 'beats', ('adn', B),
         ('base', B)),
        ('ADN super-net matches the plain network', 'matches', ('adn', S), ('plain', S)),
        ('skippable neck: its super-net matches ADN with mmdet\'s neck', 'matches',
         ('adn_neck', nS), ('adn', S)),
        ('skippable neck: its base-net (neck skipped too) matches ADN\'s base-net', 'matches',
         ('adn_neck', nB), ('adn', B)),
    ]
    rows = []
    for claim, kind, a, b in pairs:
        (ma, _), va = mean_of(runs, *a)
        (mb, _), vb = mean_of(runs, *b)
        if not va or not vb or n != n:
            rows.append([claim, 'n/a', 'n/a', 'n/a', 'not measured'])
            continue
        diff = ma - mb
        if kind == 'beats':
            text = '**holds**' if diff > n else (
                '**does not hold** (within noise)' if diff > -n else '**does not hold**')
        else:
            text = ('**holds**' + (' (within noise)' if diff <= n else ' (ahead)')) \
                if diff >= -n else '**does not hold**'
        rows.append([
            claim, f'`{a[0]}` {a[1]}: {ma:.3f}', f'`{b[0]}` {b[1]}: {mb:.3f}', f'{diff:+.3f}', text
        ])
    return rows, n


def neck_holds(runs, S: str, B: str, gflops: dict):
    """The skippable neck is made a default only if both of its depths are no worse than
    ADN with mmdet's neck (within the noise) and its base-net is cheaper."""
    n = noise(runs, S, B)
    nS, nB = S + 'F' * NECK_FLAGS, B + 'T' * NECK_FLAGS
    (s_neck, _), v1 = mean_of(runs, 'adn_neck', nS)
    (b_neck, _), v2 = mean_of(runs, 'adn_neck', nB)
    (s_adn, _), v3 = mean_of(runs, 'adn', S)
    (b_adn, _), v4 = mean_of(runs, 'adn', B)
    if not (v1 and v2 and v3 and v4) or n != n:
        return None
    g_neck = gflops.get('adn_neck', {}).get('640', {}).get(nB)
    g_adn = gflops.get('adn', {}).get('640', {}).get(B)
    cheaper = g_neck is not None and g_adn is not None and g_neck < g_adn
    return s_neck >= s_adn - n and b_neck >= b_adn - n and cheaper


def timing(data: dict) -> str:
    runs = data['runs']
    text = (f'- Time: CPU (user + sys) {data.get("cpu_s", 0) / 60:.1f} min, torch threads '
            f'{data["setup"].get("threads") or "default"}; wall {data.get("wall_s", 0) / 60:.1f} '
            f'min (training {sum(r["train_s"] for r in runs) / 60:.1f}, testing '
            f'{sum(r["test_s"] for r in runs) / 60:.1f}; the 2-core machine was shared).')
    if not data.get('complete', False):
        text += ' **Interrupted: only the runs listed under "Per run" finished.**'
    return text


def write_report(data: dict, out: str) -> str:
    runs, S, B = data['runs'], data['super_skip'], data['base_skip']
    gflops = data.get('gflops', {})
    variants = [v for v in VARIANTS if any(r['variant'] == v for r in runs)]
    plt = sc.plt_module()
    sc.ensure_dir(out)
    # every tested depth of every variant: GFLOPs at 640 px against bbox mAP
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for v in variants:
        g640 = gflops.get(v, {}).get('640', {})
        pts = []
        for skip in (['static'] if v == 'base' else sorted(g640, key=lambda s: -g640[s])):
            vals = sc.values(runs, v, B if skip == 'static' else skip, METRIC)
            if not vals:
                continue
            m, _ = sc.mean_std(vals)
            g = g640[skip]
            pts.append((g, m))
            rows.append([
                f'`{v}`', f'`{B}` (static)' if skip == 'static' else f'`{skip}`',
                f'{gflops[v]["96"][skip]:.4f}', f'{g:.3f}',
                sc.fmt_ms(vals, 3), ', '.join(f'{x:.3f}' for x in vals)
            ])
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, 'o' if v == 'base' else 'o-', ms=4, label=v)
    ax.set_xlabel('GFLOPs of backbone + neck at 640 px')
    ax.set_ylabel('bbox mAP (demo_shapes, 96 px)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    sc.save_figure(fig, osp.join(out, 'study_rtmdet_map.png'))

    holds, pre = precondition(runs, S, B)
    checks, n = verdicts(runs, S, B)
    neck = neck_holds(runs, S, B, gflops)
    setup = data['setup']
    seeds = {v: sorted(r['seed'] for r in runs if r['variant'] == v) for v in variants}
    lines = sc.report_head('RTMDet-ADN at small scale (demo_shapes)', 'rtmdet', setup) + [
        '## Setup',
        '',
        f'- Data: generated demo_shapes (COCO format, 4 classes), {setup["num_train"]} '
        f'training and {setup["num_val"]} test images, resized and padded to 96 px.',
        '- Model: `configs/demo/rtmdet_cspnext_adn_demo.py`: RTMDet with CSPNeXt at '
        'deepen_factor 0.67, widen_factor 0.125 (blocks per stage 2, 4, 4, 2; skippable '
        f'stages 1-3, one block each in stage 1 and two in stages 2 and 3: `{S}` is the '
        f'super-net, `{B}` the base-net), PAFPN with 2 blocks per CSP layer, 32 channels; '
        f'from scratch, AdamW lr 0.01, {setup["iters"]} iterations of 8 images.',
        '- Test: mmdet `CocoMetric` (pycocotools) on the test split through '
        '`SubnetTestLoop` (every sub-network) or `TestLoop` (`base`).',
        '- Seeds: ' + '; '.join(f'`{v}` {", ".join(map(str, s))}' for v, s in seeds.items()) + '.',
        timing(data),
        '',
        sc.md_table(['variant', 'what'], [[f'`{v}`', VARIANTS[v]] for v in variants]),
        '',
        '## Precondition',
        '',
        f'{pre}',
        '',
        '## Verdicts',
        '',
        f'A difference of at most the run-to-run noise ({n:.3f}) is "within noise".' +
        ('' if holds else ' The precondition does not hold (or is not judged yet): read '
         'the verdicts as not established.'),
        '',
        sc.md_table(['claim', 'A', 'B', 'A - B', 'verdict'], checks),
        '',
    ]
    if neck is not None:
        text = ('The skippable neck\'s criterion (both its depths no worse than ADN with '
                'mmdet\'s neck, within the noise, and its base-net cheaper): ')
        if not neck:
            text += '**does not hold**; it stays an option.'
        elif holds:
            text += '**holds**: the shipped ADN configs take the skippable neck.'
        else:
            text += ('**holds** at this scale, but it stays an option: the precondition does '
                     'not hold, the comparison rests on one seed each, and the neck differs '
                     'from mmdet\'s in two ways at once (residual blocks and skipping); a '
                     'normally trained RTMDet with the residual neck, which would separate '
                     'them, did not fit in the budget.')
        lines += [text, '']
    lines += [
        '## Every depth', '', '![bbox mAP against GFLOPs](study_rtmdet_map.png)', '',
        sc.md_table([
            'variant', 'sub-network', 'GFLOPs at 96 px', 'GFLOPs at 640 px', 'bbox mAP', 'per seed'
        ], rows), '',
        'GFLOPs: backbone + neck (`extract_feat`), mmengine\'s FlopAnalyzer, one image.', '',
        '## Per run', '',
        sc.md_table(['variant', 'seed', 'train s (wall)', 'test s (wall)', 'CPU s'], [[
            f'`{r["variant"]}`', r['seed'], f'{r["train_s"]:.0f}', f'{r["test_s"]:.0f}',
            f'{r["cpu_s"]:.0f}'
        ] for r in runs]), ''
    ]
    path = osp.join(out, 'study_rtmdet.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def main(argv=None):
    args = parse_args(argv)
    json_path = osp.join(args.out, 'study_rtmdet.json')
    if args.report_only:
        with open(json_path) as f:
            data = json.load(f)
    else:
        with sc.torch_threads(args.threads):
            data = run_study(args, json_path)
    path = write_report(data, args.out)
    print(f'[study_rtmdet] report: {path}')
    return data


if __name__ == '__main__':
    main()
