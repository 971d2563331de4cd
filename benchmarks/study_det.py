"""Small-scale ADN study, detection and instance segmentation: the generated demo_shapes
data (COCO format, 128 px, 4 classes) with the small Mask R-CNN of
``configs/demo/mask_rcnn_r18_adn_fpn_demo.py`` (ResNet-18-ADN, 64-channel FPN).

Each variant (see ``study_common.VARIANTS``) is trained with mmengine's Runner (ADN
variants with the real ``SubPathSpecializationHook``) and tested with ``SubnetTestLoop``
and mmdet's ``CocoMetric`` (pycocotools): bbox and segm mAP of each sub-network listed in
``--skips``.

    python benchmarks/study_det.py              # the full study (see --help)
    python benchmarks/study_det.py --quick      # smoke mode: 1 seed, a few iterations
    python benchmarks/study_det.py --report-only  # rewrite the report from the JSON

Writes ``<out>/study_det.md``, ``study_det_map.png``, ``study_det_bn.png`` and
``study_det.json``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import study_common as sc  # noqa: E402

DET_DEMO = osp.join(sc.ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py')
METRICS = [('coco/bbox_mAP', 'bbox mAP'), ('coco/segm_mAP', 'segm mAP')]
# run order: the main comparison first, then the ablations (an interrupted study keeps the
# runs that finished)
DEFAULT_VARIANTS = ['adn', 'plain', 'base', 'adn_no_kd', 'adn_no_skipbn']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help='smoke mode: 1 seed, 4 iterations, 8 test images (numbers meaningless)')
    p.add_argument('--iters', type=int, default=300, help='training iterations per model')
    p.add_argument('--num-train', type=int, default=200, help='generated training images')
    p.add_argument('--num-val', type=int, default=50, help='generated test images')
    p.add_argument('--data-root', default=None,
                   help='default: data/demo_shapes_study_<num-train>_<num-val>')
    sc.add_common_args(p, 'det', seeds=[0, 1], skips='FFFF,TFFF,TTFF,TTTF,TTTT',
                       variants=DEFAULT_VARIANTS)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.iters = args.seeds[:1], min(args.iters, 4)
        args.num_train, args.num_val = min(args.num_train, 16), min(args.num_val, 8)
    if args.data_root is None:
        args.data_root = osp.join(sc.ROOT, 'data',
                                  f'demo_shapes_study_{args.num_train}_{args.num_val}')
    sc.check_variants(args.variants)
    return args


def build_cfg(args):
    from mmengine.config import Config
    from mmadn.datasets import ensure_demo_shapes
    root = ensure_demo_shapes(args.data_root, num_train=args.num_train,
                              num_val=args.num_val).rstrip('/') + '/'
    cfg = Config.fromfile(DET_DEMO)
    gen = dict(num_train=args.num_train, num_val=args.num_val)
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        cfg[loader].dataset.generator_kwargs = gen
    cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.iters + 1)
    warm = max(1, args.iters // 6)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warm),
        dict(type='MultiStepLR', by_epoch=False, begin=0, end=args.iters,
             milestones=[int(args.iters * 0.75)], gamma=0.1)]
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, args.iters // 4))
    return cfg


def run_study(args, json_path: str) -> dict:
    import mmadn  # noqa: F401
    cfg = build_cfg(args)
    return sc.run_all(args, cfg, sc.new_data(args, 'det'), json_path, 'study_det')


def write_report(data: dict, out: str) -> str:
    runs, S, B = data['runs'], data['super_skip'], data['base_skip']
    setup, skips = data['setup'], data['skips']
    variants = [v for v in sc.VARIANTS if any(r['variant'] == v for r in runs)]
    seeds = sorted({r['seed'] for r in runs})
    adn_like = [v for v in variants if v != 'base']
    plt = sc.plt_module()
    sc.ensure_dir(out)

    # mAP of the tested sub-networks, per variant
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], METRICS):
        for v in adn_like:
            ms = [sc.mean_std(sc.values(runs, v, s, key)) for s in skips]
            ax.errorbar(range(len(skips)), [m for m, _ in ms], yerr=[d for _, d in ms],
                        marker='o', ms=3, capsize=2, label=v)
        if 'base' in variants:
            m, _ = sc.mean_std(sc.values(runs, 'base', B, key))
            ax.axhline(m, color='gray', ls='--', lw=1, label='base (individual)')
        ax.set_xticks(range(len(skips)))
        ax.set_xticklabels(skips, fontsize=8)
        ax.set_ylabel(f'{label} (mean ± std over seeds)')
        ax.set_title(f'demo_shapes Mask R-CNN: {label}', fontsize=9)
    axes[0][0].legend(fontsize=7)
    sc.save_figure(fig, osp.join(out, 'study_det_map.png'))

    bn = sc.bn_runs(runs, osp.join(out, 'study_det_bn.png'))

    title = 'ADN at small scale: detection and instance segmentation (demo_shapes)'
    lines = sc.report_head(title, 'det', setup) + [
        '## Setup',
        '',
        f'- Data: generated demo_shapes (COCO format, 128 px, 4 classes, boxes and exact '
        f'polygons), {setup["num_train"]} training and {setup["num_val"]} test images.',
        '- Model: mmdet Mask R-CNN from `configs/demo/mask_rcnn_r18_adn_fpn_demo.py` '
        '(ResNet-18-ADN from scratch, BN trained, 64-channel FPN); 16 sub-networks.',
        f'- Training: mmengine Runner, {setup["iters"]} iterations, batch 4, SGD lr 0.02, '
        'warm-up, step decay at 75 %; seeds ' + ', '.join(map(str, seeds)) + '. ADN '
        'variants: `SubPathSpecializationHook` of the demo config (alpha 0.5, per-location '
        'KD on the stage features, no base-net task loss).',
        '- Test: `SubnetTestLoop` with mmdet `CocoMetric` (pycocotools) on the test split; '
        'sub-networks ' + ', '.join(f'`{s}`' for s in skips) + '; the base-depth network '
        'with a plain `TestLoop`. mAP in [0, 1].',
        sc.timing_line(data),
        '',
        sc.md_table(['variant', 'what'], [[f'`{v}`', sc.VARIANTS[v][2]] for v in variants]),
        '',
        '## Super-net and base-net',
        '',
        f'mean ± std over {len(seeds)} seed(s).',
        '',
        sc.main_table(runs, variants, METRICS, S, B, digits=3),
        '',
        '## Checks',
        '',
        'A difference smaller than the larger standard deviation is marked "within noise".',
        '',
    ]
    for key, label in METRICS:
        lines += [f'{label}:', '',
                  sc.checks_table(sc.standard_checks(runs, variants, key, S, B, digits=3)), '']
    lines += ['## Sub-networks', '', '![mAP of the sub-networks](study_det_map.png)', '']
    for key, label in METRICS:
        header = ['skip'] + [f'`{v}` {label}' for v in adn_like]
        rows = [[f'`{s}`'] + [sc.fmt_ms(sc.values(runs, v, s, key), 3) for v in adn_like]
                for s in skips]
        lines += [sc.md_table(header, rows), '']
    return sc.finish_report(lines, 'det', out, data, bn, METRICS, digits=3)


def main(argv=None):
    return sc.study_main('det', parse_args(argv), run_study, write_report)


if __name__ == '__main__':
    main()
