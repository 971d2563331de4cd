"""Small-scale ADN study, classification: scikit-learn's handwritten digits (real data,
1797 8x8 images, 10 classes), upscaled to 32 px, fixed stratified 75/25 train/test split.

A narrow ResNet-ADN (default depth 18, 16 base channels) is trained as an mmpretrain
``ImageClassifier`` from ``configs/demo/resnet18_adn_demo.py`` (mmengine Runner, the real
``SubPathSpecializationHook``); every sub-network is tested with ``SubnetTestLoop`` and
mmpretrain's ``Accuracy``. Variants: see ``study_common.VARIANTS``. Several seeds.

    python studies/study_cls.py              # the full study (see --help)
    python studies/study_cls.py --quick      # seconds: 1 seed, a few iterations
    python studies/study_cls.py --report-only  # rewrite the report from the JSON

Writes ``<out>/study_cls.md`` (tables), ``study_cls_subnets.png`` (Figure 3a: top-1 of
every sub-network), ``study_cls_bn.png`` (Figure 3b: distance between the running means
of each skip-aware norm and its partner), and ``study_cls.json`` (every number).
Needs scikit-learn (``pip install -r requirements/studies.txt``).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import study_common as sc  # noqa: E402

CLS_DEMO = osp.join(sc.ROOT, 'configs', 'demo', 'resnet18_adn_demo.py')
METRIC = 'accuracy/top1'
DIGITS_META = 'digits_meta.json'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help='smoke mode: 1 seed, 20 iterations (numbers are meaningless)')
    p.add_argument('--iters', type=int, default=500, help='training iterations per model')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--depth', type=int, default=18)
    p.add_argument('--width', type=int, default=16, help='base channels of the ResNet')
    p.add_argument('--size', type=int, default=32, help='image side after upscaling')
    p.add_argument('--data-root', default=osp.join(sc.ROOT, 'data', 'digits'))
    sc.add_common_args(p, 'cls', seeds=[0, 1, 2], skips='all', variants=list(sc.VARIANTS))
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.iters = args.seeds[:1], min(args.iters, 20)
    sc.check_variants(args.variants)
    return args


# ----------------------------------------------------------------------------------------
# Data: the digits as an mmpretrain image-folder dataset
# ----------------------------------------------------------------------------------------
def ensure_digits(root: str, size: int = 32, test_size: float = 0.25, seed: int = 0) -> str:
    """``root/{train,test}/<digit>/NNNN.png`` (grey PNGs, ``size`` px, bicubic upscaling
    of the 8x8 digits), split once with a stratified, seeded split; reused when present."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit('the classification study needs scikit-learn (its digits data set '
                         'ships with it): pip install -r requirements/studies.txt')
    import cv2
    import numpy as np
    root = osp.join(root, f'{size}px')
    meta = dict(source='sklearn.datasets.load_digits', size=size, test_size=test_size, seed=seed)
    marker = osp.join(root, DIGITS_META)
    if osp.isfile(marker):
        with open(marker) as f:
            if json.load(f).get('split') == meta:
                return root
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed,
                                           stratify=digits.target)
    for split, ids in (('train', train_idx), ('test', test_idx)):
        for i in sorted(ids):
            img = (digits.images[i] * (255.0 / 16.0)).astype(np.float32)
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
            d = osp.join(root, split, str(digits.target[i]))
            os.makedirs(d, exist_ok=True)
            cv2.imwrite(osp.join(d, f'{i:04d}.png'),
                        np.clip(np.round(img), 0, 255).astype(np.uint8))
    with open(marker, 'w') as f:
        json.dump(dict(split=meta, num_train=len(train_idx), num_test=len(test_idx)), f)
    return root


def build_cfg(args, data_root: str):
    from mmengine.config import Config
    cfg = Config.fromfile(CLS_DEMO)
    w = args.width
    cfg.model.backbone.update(depth=args.depth, base_channels=w, stem_channels=w)
    expansion = 1 if args.depth in (18, 34) else 4
    cfg.model.head.update(num_classes=10, in_channels=8 * w * expansion, topk=(1, ))
    cfg.data_preprocessor = dict(num_classes=10, mean=[78.0] * 3, std=[96.0] * 3, to_rgb=False)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomCrop', crop_size=args.size, padding=2),
        dict(type='PackInputs')
    ]
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    for loader, split, pipeline in (('train_dataloader', 'train', train_pipeline),
                                    ('test_dataloader', 'test', test_pipeline)):
        cfg[loader].dataset = dict(type='CustomDataset', data_root=data_root, data_prefix=split,
                                   pipeline=pipeline)
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.test_dataloader.batch_size = 128
    cfg.test_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg = dict(by_epoch=False, max_iters=args.iters, val_interval=args.iters + 1)
    # the study's own recipe (the demo classifier trains with AdamW)
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=args.lr, momentum=0.9, weight_decay=1e-4)
    warm = max(1, args.iters // 20)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warm),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=warm, end=args.iters)
    ]
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, args.iters // 4))
    return cfg


# ----------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------
def run_study(args, json_path: str) -> dict:
    import mmadn  # noqa: F401
    data_root = ensure_digits(args.data_root, args.size)
    cfg = build_cfg(args, data_root)
    data = sc.new_data(args, 'cls')
    data['setup']['data_root'] = data_root

    def on_run(run, model):
        if 'mflops' not in data and run['variant'] != 'base':
            backbone = model.backbone
            data['mflops'] = sc.backbone_mflops(backbone, (3, args.size, args.size), data['skips'])
            data['stage_blocks'] = [len(getattr(backbone, n)) for n in backbone.res_layers]
            data['num_shared_blocks'] = list(backbone.num_shared_blocks)

    return sc.run_all(args, cfg, data, json_path, 'study_cls', on_run)


def write_report(data: dict, out: str) -> str:
    runs, S, B = data['runs'], data['super_skip'], data['base_skip']
    setup = data['setup']
    variants = [v for v in sc.VARIANTS if any(r['variant'] == v for r in runs)]
    seeds = sorted({r['seed'] for r in runs})
    skips = list(data['mflops'])
    plt = sc.plt_module()
    sc.ensure_dir(out)
    metrics = [(METRIC, 'top-1 %')]

    # Figure 3a: every sub-network, per variant
    adn_like = [v for v in variants if v != 'base']
    order = sorted(skips, key=lambda s: -data['mflops'][s])
    fig, ax = plt.subplots(figsize=(9, 4))
    for v in adn_like:
        ms = [sc.mean_std(sc.values(runs, v, s, METRIC)) for s in order]
        ax.errorbar(range(len(order)), [m for m, _ in ms], yerr=[d for _, d in ms], marker='o',
                    ms=3, capsize=2, label=v)
    if 'base' in variants:
        m, _ = sc.mean_std(sc.values(runs, 'base', B, METRIC))
        ax.axhline(m, color='gray', ls='--', lw=1, label=f'base (individual, {B} depth)')
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f'{s}\n{data["mflops"][s]:.1f}' for s in order], fontsize=7)
    ax.set_xlabel('sub-network (skip flags) and backbone MFLOPs (multiply-adds)')
    ax.set_ylabel('top-1 % (mean ± std over seeds)')
    ax.set_title('Digits 32 px: accuracy of every sub-network (Figure 3a)')
    ax.legend(fontsize=7)
    sc.save_figure(fig, osp.join(out, 'study_cls_subnets.png'))

    # Figure 3b: skip-aware norm distances
    bn = sc.bn_runs(runs, osp.join(out, 'study_cls_bn.png'))

    title = 'ADN at small scale: classification (scikit-learn digits)'
    lines = sc.report_head(title, 'cls', setup) + [
        '## Setup',
        '',
        f'- Data: `sklearn.datasets.load_digits` (real handwritten digits, 10 classes), '
        f'8x8 upscaled bicubically to {setup["size"]} px, fixed stratified split '
        '(75 % train = 1347 images, 25 % test = 450 images, `random_state=0`); training '
        'augmentation: random crop with 2 px padding.',
        f'- Model: mmpretrain `ImageClassifier` from `configs/demo/resnet18_adn_demo.py`, '
        f'backbone `ResNetADN(depth={setup["depth"]}, base_channels={setup["width"]})`, '
        f'blocks per stage {data.get("stage_blocks")}, shared (never skipped) '
        f'{data.get("num_shared_blocks")}; 2^4 = 16 sub-networks.',
        f'- Training: mmengine Runner, {setup["iters"]} iterations, batch '
        f'{setup["batch_size"]}, SGD lr {setup["lr"]} (momentum 0.9, wd 1e-4, none on '
        'norms/biases), linear warm-up then cosine; seeds ' + ', '.join(map(str, seeds)) +
        '. ADN variants use `SubPathSpecializationHook` (alpha 0.5, stage-feature KD per '
        'location + logit KD).',
        f'- Test: `SubnetTestLoop` over {len(skips)} sub-networks with mmpretrain '
        '`Accuracy` (top-1 %) on the 450 test images; the base-depth network with a plain '
        '`TestLoop`.',
        sc.timing_line(data),
        '',
        'Variants (the paper\'s comparisons and its Table 3 ablation):',
        '',
        sc.md_table(['variant', 'what'], [[f'`{v}`', sc.VARIANTS[v][2]] for v in variants]),
        '',
        '`plain` is `ResNetADN(skip_aware_norms=False)` without the hook: the same parameters '
        'and keys as a plain ResNet of the full depth, trained normally. Its full depth is '
        'the individually trained super-depth network; skipping blocks of it is naive '
        'skipping. `base` is `StageResNet` with the shared blocks only (no skip norms, '
        'trained normally).',
        '',
        '## Super-net and base-net',
        '',
        f'Top-1 % on the test split, mean ± std over {len(seeds)} seed(s).',
        '',
        sc.main_table(runs, variants, metrics, S, B),
        '',
        '## Checks',
        '',
        'A difference smaller than the larger standard deviation is marked "within noise".',
        '',
        sc.checks_table(sc.standard_checks(runs, variants, METRIC, S, B)),
        '',
    ]
    # every sub-network (Figure 3a)
    lines += [
        '## Every sub-network (Figure 3a)', '',
        '![top-1 of every sub-network](study_cls_subnets.png)', ''
    ]
    header = ['skip', 'backbone MFLOPs'] + [f'`{v}`' for v in adn_like]
    rows = [[f'`{s}`', f'{data["mflops"][s]:.2f}'] +
            [sc.fmt_ms(sc.values(runs, v, s, METRIC)) for v in adn_like] for s in order]
    lines += [sc.md_table(header, rows), '']
    tol = 1.0
    mono_rows = []
    for v in adn_like:
        accs = {s: sc.mean_std(sc.values(runs, v, s, METRIC))[0] for s in skips}
        ok, total, worst = sc.subnet_monotonicity(accs, tol)
        mono_rows.append([
            f'`{v}`', f'{accs[S]:.1f}', f'{accs[B]:.1f}', f'{accs[S] - accs[B]:.1f}',
            f'{ok}/{total}', f'{worst:.1f}'
        ])
    lines += [
        f'Gradual degradation: over the {mono_rows[0][4].split("/")[1] if mono_rows else 0} '
        'pairs of sub-networks that differ by one more skipped stage, how many lose at most '
        f'{tol:.0f} point (mean over seeds), and the largest one-step loss.',
        '',
        sc.md_table([
            'variant', f'{S}', f'{B}', f'{S} - {B}', f'one-step loss <= {tol:.0f}',
            'largest one-step loss'
        ], mono_rows),
        '',
    ]
    return sc.finish_report(lines, 'cls', out, data, bn, metrics, digits=1)


def main(argv=None):
    return sc.study_main('cls', parse_args(argv), run_study, write_report)


if __name__ == '__main__':
    main()
