"""Small-scale ADN study, detection and instance segmentation, in the paper's pipeline:
classifiers pretrained first, then Mask R-CNN detectors whose backbones start from them.

1. Per seed, three ResNet-18 classifiers on the generated ``demo_shapes_cls`` data
   (``configs/demo/resnet18_adn_demo.py``): an ADN classifier (sub-path specialization), a
   plain one, and one of the base-net's depth (``StageResNet``).
2. Per seed, the Mask R-CNN of ``configs/demo/mask_rcnn_r18_adn_fpn_demo.py`` (frozen
   norms, the authors' detection recipe) on the generated ``demo_shapes`` data, in the
   variants of :data:`DET_VARIANTS`, each backbone from its classifier (``init_cfg``
   Pretrained, ``prefix='backbone.'``).

Everything runs through mmengine's Runner; ADN variants with the real
``SubPathSpecializationHook``, tested with ``SubnetTestLoop`` and mmdet's ``CocoMetric``
(pycocotools). The JSON is saved after every run and an interrupted study resumes from it
(same settings), so it can span sessions.

    python studies/study_det.py              # the full study (see --help)
    python studies/study_det.py --quick      # smoke mode: 1 seed, a few iterations
    python studies/study_det.py --report-only  # rewrite the report from the JSON

Writes ``<out>/study_det.md``, ``study_det_map.png`` and ``study_det.json``.
"""
import argparse
import copy
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import study_common as sc  # noqa: E402

DET_DEMO = osp.join(sc.ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py')
CLS_DEMO = osp.join(sc.ROOT, 'configs', 'demo', 'resnet18_adn_demo.py')
METRICS = [('coco/bbox_mAP', 'bbox mAP'), ('coco/segm_mAP', 'segm mAP')]
CLS_METRIC = 'accuracy/top1'

#: the classifiers pretrained per seed: kind -> the classification-study variant that builds
#: it (``study_common.apply_variant``)
PRETRAIN_KINDS = {'adn': 'adn', 'plain': 'plain', 'base': 'base'}

#: detection variants. ``init``: the classifier the backbone starts from; ``hook``: the
#: training hook ('recipe': the demo config's, 'no_kd': the same without feature KD,
#: 'stages': KD on the stage outputs per location, summed; None: plain training);
#: ``skip_aware``: skip-aware norms; ``calib``: ``SkipNormCalibrationHook``.
DET_VARIANTS = {
    'adn':
    dict(
        init='adn', hook='recipe', skip_aware=True, calib=False,
        what="ADN, the authors' recipe: alpha det(super) + (1 - alpha) (det(base) + "
        'KD of the pooled FPN outputs, mean over levels); from the ADN classifier'),
    'adn_no_kd':
    dict(init='adn', hook='no_kd', skip_aware=True, calib=False,
         what='`adn` without the KD term: alpha det(super) + (1 - alpha) '
         'det(base)'),
    'adn_stage_kd':
    dict(
        init='adn', hook='stages', skip_aware=True, calib=False,
        what='`adn` with KD on the four stage outputs instead (per-location '
        'channel softmax, summed over stages)'),
    'adn_no_skipbn':
    dict(
        init='adn', hook='recipe', skip_aware=False, calib=False,
        what='`adn` without skip-aware norms (the classifier\'s skip norms '
        'are dropped; one norm set for every depth)'),
    'plain':
    dict(
        init='plain', hook=None, skip_aware=False, calib=False,
        what='plain detector from the plain classifier, trained normally; its '
        'sub-networks are naive skipping'),
    'base':
    dict(
        init='base', hook=None, skip_aware=False, calib=False,
        what="detector of the base-net's depth (StageResNet) from the base-depth "
        'classifier, trained normally'),
    'adn_plain_init':
    dict(
        init='plain', hook='recipe', skip_aware=True, calib=False,
        what='`adn` started from the plain classifier: the frozen skip '
        'norms stay copies of their partners'),
    'adn_plain_init_calib':
    dict(
        init='plain', hook='recipe', skip_aware=True, calib=True,
        what='`adn_plain_init` + `SkipNormCalibrationHook` (skip '
        'norms calibrated on 8 base-net batches before '
        'training, then frozen)'),
}
# run order: the precondition and the main comparison first; every seed of a variant before
# the next variant (an interrupted study keeps complete comparisons)
DEFAULT_VARIANTS = [
    'plain', 'adn', 'adn_no_kd', 'base', 'adn_stage_kd', 'adn_no_skipbn', 'adn_plain_init',
    'adn_plain_init_calib'
]
# settings that must match for a study to resume from its JSON
RESUME_KEYS = ('iters', 'cls_iters', 'num_train', 'num_val', 'cls_per_class', 'skips', 'quick',
               'threads')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        '--quick', action='store_true',
        help='smoke mode: 1 seed, a few iterations, 16 + 8 images (numbers '
        'meaningless)')
    p.add_argument('--iters', type=int, default=None,
                   help="detector training iterations (default: the demo config's)")
    p.add_argument('--cls-iters', type=int, default=None,
                   help="classifier pretraining iterations (default: the demo config's)")
    p.add_argument('--num-train', type=int, default=200, help='generated training images')
    p.add_argument('--num-val', type=int, default=50, help='generated test images')
    p.add_argument('--cls-per-class', type=int, default=1000,
                   help='generated classification training images per class')
    p.add_argument('--data-root', default=None,
                   help='default: data/demo_shapes_study_<num-train>_<num-val>')
    p.add_argument('--fresh', action='store_true',
                   help='start over instead of resuming from <out>/study_det.json')
    sc.add_common_args(p, 'det', seeds=[0, 1], skips='FFFF,TFFF,TTFF,TTTF,TTTT',
                       variants=DEFAULT_VARIANTS)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.iters, args.cls_iters = min(args.iters or 4, 4), min(args.cls_iters or 4, 4)
        args.num_train, args.num_val = min(args.num_train, 16), min(args.num_val, 8)
        args.cls_per_class = min(args.cls_per_class, 8)
    # the schedules in the study's JSON are the ones run, not "the config's", which can change
    from mmengine.config import Config
    if args.iters is None:
        args.iters = Config.fromfile(DET_DEMO).train_cfg.max_iters
    if args.cls_iters is None:
        args.cls_iters = Config.fromfile(CLS_DEMO).train_cfg.max_iters
    if args.data_root is None:
        args.data_root = osp.join(sc.ROOT, 'data',
                                  f'demo_shapes_study_{args.num_train}_{args.num_val}')
    bad = [v for v in args.variants if v not in DET_VARIANTS]
    if bad:
        raise SystemExit(f'unknown variant(s) {bad}: expected names from {list(DET_VARIANTS)}')
    return args


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------
def cls_cfg(args):
    """The demo classifier on the study's classification data."""
    from mmengine.config import Config
    root = osp.join(args.data_root, 'cls')
    cfg = Config.fromfile(CLS_DEMO)
    gen = dict(num_train_per_class=args.cls_per_class,
               num_val_per_class=max(4, args.cls_per_class // 20))
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.update(data_root=root, generator_kwargs=gen)
    return _study_run(cfg, args.cls_iters)


def det_cfg(args):
    """The demo detector on the study's detection data."""
    from mmengine.config import Config
    root = osp.join(args.data_root, 'det').rstrip('/') + '/'
    cfg = Config.fromfile(DET_DEMO)
    gen = dict(num_train=args.num_train, num_val=args.num_val)
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.update(data_root=root, generator_kwargs=gen)
    cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    return _study_run(cfg, args.iters)


def _study_run(cfg, iters):
    """The config's schedule (stretched to ``iters`` if given), no validation and no
    checkpoints (the study saves the weights it needs itself)."""
    if iters:
        cfg.train_cfg.max_iters = iters
        _rescale_schedule(cfg, iters)
    cfg.train_cfg.val_interval = cfg.train_cfg.max_iters + 1
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1,
                                                                    cfg.train_cfg.max_iters // 4))
    return cfg


def _rescale_schedule(cfg, iters: int) -> None:
    """Stretch the config's iteration-based schedule (warm-up, milestones) to ``iters``."""
    old = max(s.get('end', 0) for s in cfg.param_scheduler)
    for s in cfg.param_scheduler:
        for key in ('begin', 'end'):
            if key in s:
                s[key] = max(0 if key == 'begin' else 1, round(s[key] * iters / old))
        if 'milestones' in s:
            s['milestones'] = [max(1, round(m * iters / old)) for m in s['milestones']]


def det_variant_cfg(base_cfg, variant: str, init_ckpt: str, skips):
    """A copy of the detector config set up as ``variant``, its backbone from
    ``init_ckpt`` (a classifier checkpoint)."""
    spec = DET_VARIANTS[variant]
    cfg = copy.deepcopy(base_cfg)
    recipe, = [h for h in cfg.custom_hooks if h['type'] == 'SubPathSpecializationHook']
    others = [h for h in cfg.custom_hooks if h['type'] != 'SubPathSpecializationHook']
    backbone = {k: v for k, v in cfg.model.backbone.items() if k != '_delete_'}
    backbone['init_cfg'] = dict(type='Pretrained', checkpoint=init_ckpt, prefix='backbone.')
    if variant == 'base':
        blocks = sc.base_stage_blocks({k: v for k, v in backbone.items() if k != 'init_cfg'})
        backbone = {k: v for k, v in backbone.items() if k not in sc._ADN_ONLY_ARGS}
        backbone.update(type='StageResNet', stage_blocks=blocks)
        cfg.test_cfg = dict(type='TestLoop')
    else:
        if not spec['skip_aware']:
            backbone['skip_aware_norms'] = False
        cfg.test_cfg = dict(type='SubnetTestLoop', skips=skips, profile=False)
    cfg.model.backbone = backbone
    hook = copy.deepcopy(dict(recipe))
    if spec['hook'] == 'no_kd':
        hook['feat_kd'] = None
    elif spec['hook'] == 'stages':
        hook.update(features='stages', feat_kd=dict(type='SubPathKDLoss', mode='spatial'),
                    level_reduction='sum')
    if spec['hook'] is not None:
        others.append(hook)
    if spec['calib']:
        others.append(dict(type='SkipNormCalibrationHook', num_batches=8))
    cfg.custom_hooks = others
    return cfg


# ----------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------
def _setup_key(setup: dict) -> dict:
    return {k: setup.get(k) for k in RESUME_KEYS}


def load_or_new(args, json_path: str) -> dict:
    """The study's JSON: resumed when it exists with the same settings (unless
    ``--fresh``), else new."""
    data = sc.new_data(args, 'det', pretrain=[])
    if args.fresh or not osp.isfile(json_path):
        return data
    with open(json_path) as f:
        old = json.load(f)
    if _setup_key(old['setup']) != _setup_key(data['setup']):
        raise SystemExit(
            f'{json_path} holds a study with other settings ({_setup_key(old["setup"])}); '
            f'this one has {_setup_key(data["setup"])}: pass --fresh to start over, or '
            '--out DIR to keep both')
    old['setup'].update(seeds=sorted(set(old['setup']['seeds']) | set(args.seeds)),
                        variants=list(dict.fromkeys(old['setup']['variants'] + args.variants)))
    print(f'[study_det] resuming {json_path}: {len(old["runs"])} run(s) done', flush=True)
    return old


def pretrain(args, data: dict, kind: str, seed: int, json_path: str) -> str:
    """The classifier ``kind`` of ``seed``: trained once, its weights kept in the work dir
    (retrained if a resumed study finds them missing)."""
    import torch
    ckpt = osp.join(args.work_dir, f'cls_{kind}_seed{seed}', 'classifier.pth')
    done = [p for p in data['pretrain'] if (p['kind'], p['seed']) == (kind, seed)]
    if done and osp.isfile(ckpt):
        return ckpt
    cfg = sc.apply_variant(cls_cfg(args), PRETRAIN_KINDS[kind], ['FFFF', 'TTTT'])
    cpu0 = sc.cpu_seconds()
    results, model, times = sc.run_variant(cfg, osp.dirname(ckpt), seed)
    torch.save({'state_dict': model.state_dict(), 'meta': dict(study='det', kind=kind)}, ckpt)
    top1 = {k: v.get(CLS_METRIC) for k, v in results.items()}
    entry = dict(kind=kind, seed=seed, top1=top1, cpu_s=sc.cpu_seconds() - cpu0, **times)
    data['pretrain'] = [p for p in data['pretrain'] if (p['kind'], p['seed']) != (kind, seed)]
    data['pretrain'].append(entry)
    print(
        f'[study_det] seed {seed} classifier {kind:6s} top-1 {top1} '
        f'({entry["cpu_s"]:.0f} CPU s)', flush=True)
    sc.save_json(data, json_path)
    return ckpt


def run_study(args, json_path: str) -> dict:
    import mmadn  # noqa: F401
    from mmadn.datasets import ensure_demo_shapes
    data = load_or_new(args, json_path)
    ensure_demo_shapes(osp.join(args.data_root, 'det'), num_train=args.num_train,
                       num_val=args.num_val)
    base_cfg = det_cfg(args)
    t_start, cpu_start = time.perf_counter(), sc.cpu_seconds()
    wall0, cpu_before = data.get('wall_s', 0.0), data.get('cpu_s', 0.0)
    for variant in args.variants:
        for seed in args.seeds:
            if any((r['variant'], r['seed']) == (variant, seed) for r in data['runs']):
                continue
            init = pretrain(args, data, DET_VARIANTS[variant]['init'], seed, json_path)
            cfg = det_variant_cfg(base_cfg, variant, init, data['skips'])
            cpu0 = sc.cpu_seconds()
            results, _, times = sc.run_variant(cfg, osp.join(args.work_dir,
                                                             f'{variant}_seed{seed}'), seed)
            run = dict(variant=variant, seed=seed, results=results, base_skip=sc.BASE,
                       cpu_s=sc.cpu_seconds() - cpu0, **times)
            data['runs'].append(run)
            shown = results.get(sc.SUPER, results.get('static', {}))
            shown = ', '.join(f'{k} {v:.3f}' for k, v in shown.items() if isinstance(v, float))
            print(f'[study_det] seed {seed} {variant:20s} {shown} ({run["cpu_s"]:.0f} CPU s)',
                  flush=True)
            data.update(wall_s=wall0 + time.perf_counter() - t_start,
                        cpu_s=cpu_before + sc.cpu_seconds() - cpu_start, complete=False)
            sc.save_json(data, json_path)
    planned = {(v, s) for v in data['setup']['variants'] for s in data['setup']['seeds']}
    data['complete'] = planned <= {(r['variant'], r['seed']) for r in data['runs']}
    data.update(wall_s=wall0 + time.perf_counter() - t_start,
                cpu_s=cpu_before + sc.cpu_seconds() - cpu_start)
    sc.save_json(data, json_path)
    return data


# ----------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------
def precondition(runs, key: str, S: str, B: str, digits: int = 3):
    """Naive skipping of the plain network must lose clearly more than the seed noise:
    ``(holds, sentence)``; ``holds`` is None when it cannot be judged yet."""
    sup, naive = sc.values(runs, 'plain', S, key), sc.values(runs, 'plain', B, key)
    if not sup or not naive:
        return None, 'not measured yet (the `plain` variant has not run).'
    (ms, ss), (mb, sb) = sc.mean_std(sup), sc.mean_std(naive)
    drop, noise = ms - mb, max(ss, sb)
    if len(sup) < 2:
        return None, (f'naive skipping of the plain network loses {drop:.{digits}f} '
                      f'({ms:.{digits}f} -> {mb:.{digits}f}); one seed, so no noise estimate.')
    holds = drop > 2 * noise
    return holds, (
        f'naive skipping of the plain network loses {drop:.{digits}f} ({ms:.{digits}f} -> '
        f'{mb:.{digits}f}) against a seed spread (largest std) of {noise:.{digits}f}: ' +
        ('more than twice the noise, so this scale can tell variants apart.' if holds else
         '**not more than twice the noise: this scale cannot test the claims; grow the '
         'schedule (--iters) until it can.**'))


def det_checks(runs, variants, key: str, S: str, B: str, digits: int = 3):
    has = set(variants)
    rows = []

    def add(a, b, claim):
        if {a[0], b[0]} <= has:
            rows.append(sc.compare(runs, a, b, key, claim, digits))

    add(('adn', B), ('plain', B), '(d) ADN base-net beats naive skipping of the plain net')
    add(('adn', S), ('plain', S), '(d) ADN super-net matches or beats the plain network')
    add(('adn', B), ('base', B), '(d) ADN base-net beats the individual base-depth network')
    for other, what in (('adn_no_kd', '(a) KD helps'),
                        ('adn_stage_kd', '(b) pooled-FPN KD beats per-location stage KD'),
                        ('adn_no_skipbn', '(c) skip-aware norms help')):
        for skip, net in ((S, 'super-net'), (B, 'base-net')):
            add(('adn', skip), (other, skip), f'{what}: {net}')
    for skip, net in ((S, 'super-net'), (B, 'base-net')):
        add(('adn_plain_init_calib', skip), ('adn_plain_init', skip),
            f'(e) calibration helps a plain start: {net}')
    return rows


def write_report(data: dict, out: str) -> str:
    runs, S, B = data['runs'], data['super_skip'], data['base_skip']
    setup, skips = data['setup'], data['skips']
    variants = [v for v in DET_VARIANTS if any(r['variant'] == v for r in runs)]
    seeds = sorted({r['seed'] for r in runs})
    adn_like = [v for v in variants if v != 'base']
    plt = sc.plt_module()
    sc.ensure_dir(out)
    descriptions = {v: DET_VARIANTS[v]['what'] for v in DET_VARIANTS}

    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], METRICS):
        for v in adn_like:
            ms = [sc.mean_std(sc.values(runs, v, s, key)) for s in skips]
            ax.errorbar(range(len(skips)), [m for m, _ in ms], yerr=[d for _, d in ms], marker='o',
                        ms=3, capsize=2, label=v)
        if 'base' in variants:
            m, _ = sc.mean_std(sc.values(runs, 'base', B, key))
            ax.axhline(m, color='gray', ls='--', lw=1, label='base (individual)')
        ax.set_xticks(range(len(skips)))
        ax.set_xticklabels(skips, fontsize=8)
        ax.set_ylabel(f'{label} (mean ± std over seeds)')
        ax.set_title(f'demo_shapes Mask R-CNN: {label}', fontsize=9)
    axes[0][0].legend(fontsize=6)
    sc.save_figure(fig, osp.join(out, 'study_det_map.png'))

    pre_rows = []
    for p in sorted(data.get('pretrain', []), key=lambda p: (p['seed'], p['kind'])):
        top1 = ', '.join(f'{k} {v:.1f}' for k, v in p['top1'].items() if v is not None)
        pre_rows.append([p['seed'], f'`{p["kind"]}`', top1, f'{p["cpu_s"]:.0f}'])
    holds, pre_text = precondition(runs, METRICS[0][0], S, B)
    title = 'ADN at small scale: detection and instance segmentation (demo_shapes)'
    lines = sc.report_head(title, 'det', setup) + [
        '## Setup',
        '',
        f'- Data: generated demo_shapes (COCO format, 128 px, 4 classes, boxes and exact '
        f'polygons), {setup["num_train"]} training and {setup["num_val"]} test images; the '
        f'classifiers on demo_shapes_cls (32 px, one shape per image, '
        f'{setup["cls_per_class"]} training images per class).',
        f'- Schedules: classifiers {setup["cls_iters"]} iterations, detectors '
        f'{setup["iters"]} iterations.',
        '- Pipeline: per seed, ResNet-18 classifiers (`configs/demo/resnet18_adn_demo.py`: '
        'ADN, plain, base depth) are trained first; each detector\'s backbone starts from '
        'one of them (`init_cfg` Pretrained, `prefix=\'backbone.\'`), its norms frozen.',
        '- Detector: mmdet Mask R-CNN from `configs/demo/mask_rcnn_r18_adn_fpn_demo.py` '
        '(64-channel FPN), mmengine Runner, seeds ' + ', '.join(map(str, seeds)) + '.',
        '- Test: `SubnetTestLoop` with mmdet `CocoMetric` (pycocotools) on the test split; '
        'sub-networks ' + ', '.join(f'`{s}`' for s in skips) + '; the base-depth network '
        'with a plain `TestLoop`. mAP in [0, 1].',
        sc.timing_line(data),
        '',
        sc.md_table(['variant', 'what'], [[f'`{v}`', descriptions[v]] for v in variants]),
        '',
        '`adn` and each ablation differ in exactly the one setting named.',
        '',
        '## Precondition',
        '',
        f'Precondition (bbox mAP): {pre_text}',
        '',
        '## Super-net and base-net',
        '',
        f'mean ± std over {len(seeds)} seed(s).',
        '',
        sc.main_table(runs, variants, METRICS, S, B, digits=3, descriptions=descriptions),
        '',
        '## Checks',
        '',
        'A difference smaller than the larger standard deviation is marked "within noise".' +
        ('' if holds else ' The precondition does not hold (or is not judged yet): read '
         'the verdicts as not established.'),
        '',
    ]
    for key, label in METRICS:
        lines += [
            f'{label}:', '',
            sc.checks_table(det_checks(runs, variants, key, S, B, digits=3)), ''
        ]
    lines += ['## Sub-networks', '', '![mAP of the sub-networks](study_det_map.png)', '']
    for key, label in METRICS:
        header = ['skip'] + [f'`{v}` {label}' for v in adn_like]
        rows = [[f'`{s}`'] + [sc.fmt_ms(sc.values(runs, v, s, key), 3) for v in adn_like]
                for s in skips]
        lines += [sc.md_table(header, rows), '']
    if pre_rows:
        lines += [
            '## Pretrained classifiers', '',
            sc.md_table(['seed', 'classifier', 'top-1 % (test split)', 'CPU s'], pre_rows), ''
        ]
    return sc.finish_report(lines, 'det', out, data, {}, METRICS, digits=3)


def main(argv=None):
    return sc.study_main('det', parse_args(argv), run_study, write_report)


if __name__ == '__main__':
    main()
