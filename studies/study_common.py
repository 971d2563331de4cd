"""Shared pieces of the small-scale ADN study (``study_cls.py``, ``study_det.py``).

Every model is trained through the real stack: a config (the demo configs plus overrides),
mmengine's ``Runner``, the ``SubPathSpecializationHook`` as a custom hook, and
``SubnetTestLoop`` / ``TestLoop`` with the task's own evaluator for the metrics.

The trained variants (the paper's comparisons and its Table 3 ablation):

==================  ==================================================================
``adn``             ADN: sub-path specialization (the hook of the demo config: alpha 0.5,
                    KD of the base-net toward the super-net) + skip-aware norms
``adn_no_kd``       ADN without sub-path specialization, as the paper's ablation defines
                    it: ``loss = 1/2 (task(super) + task(base))``, no KD term (hook with
                    ``feat_kd=None, logit_kd=None, base_task_loss=True``), skip-aware norms
``adn_no_skipbn``   ADN without skip-aware norms (``ResNetADN(skip_aware_norms=False)``):
                    the same hook, one set of norms shared by both sub-networks
``adn_neither``     neither component: no KD and no skip-aware norms
``plain``           the same backbone trained normally (no hook, no skip norms): its full
                    depth is the individually trained super-depth network, its
                    sub-networks are "naive skipping" of a normally trained network
``base``            an individually trained network of the base-net's depth:
                    ``StageResNet`` (a plain mmdet ResNet with the shared blocks only)
==================  ==================================================================
"""
import contextlib
import copy
import json
import math
import os
import os.path as osp
import resource
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

NO_KD_HOOK = dict(type='SubPathSpecializationHook', alpha=0.5, feat_kd=None, logit_kd=None,
                  base_task_loss=True)

#: name -> (hook: 'adn' | 'no_kd' | None, skip-aware norms, description)
VARIANTS: Dict[str, Tuple[Optional[str], bool, str]] = {
    'adn': ('adn', True, 'ADN: sub-path specialization + skip-aware BN'),
    'adn_no_kd': ('no_kd', True, 'ADN w/o sub-path specialization (no KD; '
                  '1/2 task(super) + 1/2 task(base)), with skip-aware BN'),
    'adn_no_skipbn': ('adn', False, 'ADN w/o skip-aware BN (sub-path specialization only)'),
    'adn_neither': ('no_kd', False, 'neither (no KD, no skip-aware BN)'),
    'plain': (None, False, 'plain network trained normally; sub-networks = naive skipping'),
    'base': (None, False, 'individually trained base-depth network (StageResNet)'),
}
_ADN_ONLY_ARGS = ('num_shared_blocks', 'skip', 'skip_aware_norms', '_delete_')
SUPER, BASE = 'FFFF', 'TTTT'


def study_skips(skips: str) -> List[str]:
    """``'all'`` or ``'FFFF,TTFF'`` -> skip strings of a 4-stage backbone, the super-net
    and the base-net always included (the study compares them)."""
    from mmadn.models.layers.skip import format_skip, resolve_skips
    out = [format_skip(s) for s in resolve_skips(skips, 4)]
    if SUPER not in out:
        out.insert(0, SUPER)
    if BASE not in out:
        out.append(BASE)
    return out


def check_variants(names: Sequence[str]) -> List[str]:
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise ValueError(f'unknown variant(s) {bad}: expected names from {list(VARIANTS)}')
    return list(names)


def base_stage_blocks(backbone_cfg: dict) -> Tuple[int, ...]:
    """Blocks per stage of the base-net of the ADN backbone configured by ``backbone_cfg``."""
    from mmadn.models.backbones import ResNetADN
    cfg = {k: v for k, v in dict(backbone_cfg).items() if k not in ('type', '_delete_')}
    return tuple(ResNetADN(**cfg).num_shared_blocks)


def apply_variant(cfg: Config, variant: str, skips) -> Config:
    """A copy of ``cfg`` (an ADN config with the hook in ``custom_hooks``) set up to train
    ``variant`` and to test the sub-networks ``skips`` afterwards (one TestLoop for the
    plain base-depth network)."""
    hook, skip_aware, _ = VARIANTS[check_variants([variant])[0]]
    cfg = copy.deepcopy(cfg)
    backbone = {k: v for k, v in cfg.model.backbone.items() if k != '_delete_'}
    adn_hooks = [h for h in cfg.custom_hooks if h['type'] == 'SubPathSpecializationHook']
    others = [h for h in cfg.custom_hooks if h['type'] != 'SubPathSpecializationHook']
    if variant == 'base':
        blocks = base_stage_blocks(backbone)
        backbone = {k: v for k, v in backbone.items() if k not in _ADN_ONLY_ARGS}
        backbone.update(type='StageResNet', stage_blocks=blocks)
        cfg.test_cfg = dict(type='TestLoop')
    else:
        backbone['skip_aware_norms'] = skip_aware
        # no profiling: the study counts backbone FLOPs itself, once (``backbone_mflops``)
        cfg.test_cfg = dict(type='SubnetTestLoop', skips=skips, profile=False)
    cfg.model.backbone = backbone  # replaces the whole dict
    if hook == 'adn':
        others += adn_hooks
    elif hook == 'no_kd':
        others.append(dict(NO_KD_HOOK))
    cfg.custom_hooks = others
    return cfg


def run_variant(cfg: Config, work_dir: str, seed: int) -> Tuple[Dict[str, dict], object, dict]:
    """Train and test one configured variant with mmengine's Runner.

    Returns ``(results, model, times)``: ``results`` maps a skip string (``'FFFF'``; the
    key ``'static'`` for a plain ``TestLoop``) to that sub-network's metrics.
    """
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.experiment_name = f'{osp.basename(work_dir)}_{time.time_ns()}'
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    t0 = time.perf_counter()
    runner.train()
    t1 = time.perf_counter()
    metrics = runner.test()
    t2 = time.perf_counter()
    results: Dict[str, dict] = {}
    for key, value in metrics.items():
        head, _, rest = key.partition('/')
        if cfg.test_cfg['type'] == 'SubnetTestLoop':
            results.setdefault(head, {})[rest] = value
        else:
            results.setdefault('static', {})[key] = value
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    return results, model, dict(train_s=t1 - t0, test_s=t2 - t1)


# ----------------------------------------------------------------------------------------
# Figure 3(b): distance between the running means of the skip-aware norms and partners
# ----------------------------------------------------------------------------------------
def skip_norm_distances(backbone) -> List[dict]:
    """One row per skip-aware norm pair of an ADN backbone (``skip_norm_pairs()`` order).

    ``distance`` is the mean over channels of ``|mu_skip - mu| / sigma`` with
    ``sigma = sqrt((var + var_skip) / 2 + eps)`` (scale-free, comparable across layers);
    ``raw`` is the unnormalized mean ``|mu_skip - mu|``. ``first`` marks the first norm
    of each stage: the layer whose input is the previous stage's output, i.e. whose two
    running means compare the previous stage's super-net and base-net features.
    """
    modules = dict(backbone.named_modules())
    rows, seen_stages = [], set()
    for skip_name, name in backbone.skip_norm_pairs():
        norm, skip_norm = modules[name], modules[skip_name]
        if norm.running_mean is None or skip_norm.running_mean is None:
            raise ValueError(f'{name}: no running statistics (track_running_stats=False)')
        stage = name.split('.', 1)[0]
        first = stage not in seen_stages
        seen_stages.add(stage)
        diff = (skip_norm.running_mean - norm.running_mean).abs().double()
        sigma = torch.sqrt((norm.running_var + skip_norm.running_var).double() / 2 + norm.eps)
        rows.append(
            dict(name=name, stage=stage, first=first, distance=float((diff / sigma).mean()),
                 raw=float(diff.mean())))
    return rows


# ----------------------------------------------------------------------------------------
# Statistics, tables, plots
# ----------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return float('nan'), float('nan')
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_ms(values: Sequence[float], digits: int = 1) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return 'n/a'
    return f'{m:.{digits}f} ± {s:.{digits}f}' if len(values) > 1 else f'{m:.{digits}f}'


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = [
        '| ' + ' | '.join(str(h) for h in header) + ' |',
        '|' + '|'.join('---' for _ in header) + '|'
    ]
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


def verdict(ok: bool) -> str:
    return '**holds**' if ok else '**does not hold**'


def report_head(title: str, name: str, setup: dict) -> List[str]:
    """Title and provenance lines of a report."""
    return [
        f'# {title}', '',
        f'Generated by `{setup["command"].strip()}`; every number below comes from '
        f'`study_{name}.json` beside this file.' +
        (' **QUICK MODE: a smoke run, the numbers are meaningless.**'
         if setup.get('quick') else ''), ''
    ]


def finish_report(lines: List[str], name: str, out: str, data: dict, bn: dict, metrics,
                  digits: int) -> str:
    """Append the skip-norm section (when there is one) and the per-seed table, write
    ``<out>/study_<name>.md`` and return its path."""
    if bn:
        lines = lines + bn_section(bn, f'study_{name}_bn.png')
    lines = lines + [
        '## Per seed', '',
        per_seed_table(data['runs'], metrics, data['super_skip'], data['base_skip'], digits), ''
    ]
    path = osp.join(out, f'study_{name}.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def save_figure(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt_module().close(fig)


def plt_module():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_bn_distances(per_variant: Dict[str, List[List[dict]]], path: str) -> None:
    """Bar chart per variant: mean (over seeds) normalized distance of each skip-aware norm,
    coloured by stage, the first norm of each stage hatched."""
    plt = plt_module()
    n = len(per_variant)
    width = max(4.0, 0.45 * _num_norms(per_variant))
    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.8), squeeze=False)
    colors = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown']
    for ax, (variant, seeds) in zip(axes[0], per_variant.items()):
        rows = seeds[0]
        means = [mean_std([s[i]['distance'] for s in seeds]) for i in range(len(rows))]
        stages = sorted({r['stage']
                         for r in rows}, key=lambda s: [r['stage'] for r in rows].index(s))
        for i, (r, (m, sd)) in enumerate(zip(rows, means)):
            ax.bar(i, m, yerr=sd, color=colors[stages.index(r['stage']) % len(colors)],
                   hatch='//' if r['first'] else None, edgecolor='black', linewidth=0.5)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r['name'] for r in rows], rotation=70, fontsize=7)
        ax.set_ylabel('mean |mu_skip - mu| / sigma')
        ax.set_title(variant, fontsize=9)
    fig.suptitle('running means of bnX_skip vs. bnX (hatched: first norm of a stage)', fontsize=9)
    save_figure(fig, path)


def bn_section(bn: Dict[str, List[List[dict]]], png: str) -> List[str]:
    """The Figure-3b part of a report: ``bn`` maps a variant to its per-seed rows of
    :func:`skip_norm_distances`."""
    lines = [
        '## Skip-aware norms (Figure 3b)', '', f'![distance between the running means]({png})', '',
        'Distance between the running means of each skip-aware norm (`bnX_skip`, '
        'updated in base-net passes) and its partner (`bnX`, super-net passes): mean '
        'over channels of |mu_skip - mu| / sigma, sigma = sqrt of the mean of the two '
        'running variances; mean ± std over seeds. The first norm of a stage sees the '
        'previous stage\'s output; in stage 1 that is the stem output, the same in both '
        'passes, so its distance is zero by construction. The paper\'s claim is about the '
        'later stages: their first norm should be near zero (the previous stage\'s '
        'features keep their distribution when its sub-path is skipped), the other '
        'norms clearly not.', ''
    ]
    header = ['group'] + [f'`{v}`' for v in bn]
    summaries = {v: bn_distance_summary(rows) for v, rows in bn.items()}
    groups = list(next(iter(summaries.values())))
    rows = [[g] + [f'{summaries[v][g][0]:.3f} ± {summaries[v][g][1]:.3f}' for v in bn]
            for g in groups]
    lines += [md_table(header, rows), '']
    per_norm = []
    first_rows = next(iter(bn.values()))[0]
    for i, r in enumerate(first_rows):
        per_norm.append([f'`{r["name"]}`', 'yes' if r['first'] else ''] +
                        [fmt_ms([s[i]['distance'] for s in bn[v]], 3) for v in bn])
    lines += [md_table(['norm', 'first of stage'] + [f'`{v}`' for v in bn], per_norm), '']
    if 'adn' in summaries:
        s = summaries['adn']
        first, other = s['first norm, later stages'][0], s['other shared-block norms'][0]
        lines += [
            f'ADN: first norms of stages 2-4 average {first:.3f}, the other norms '
            f'{other:.3f} (ratio {first / other if other else float("nan"):.2f}): the '
            f'claim "first layer near zero, the others not" '
            f'{verdict(first < 0.5 * other)} (criterion: less than half).', ''
        ]
    return lines


def _num_norms(per_variant) -> int:
    return max(len(seeds[0]) for seeds in per_variant.values())


def bn_distance_summary(rows_per_seed: List[List[dict]]) -> Dict[str, Tuple[float, float]]:
    """Mean ± std over seeds of the average distance of: the first norm of stage 1 (its
    input, the stem output, is the same in both passes), the first norms of the later
    stages, and every other skip-aware norm."""

    def avg(rows, pick):
        vals = [r['distance'] for r in rows if pick(r)]
        return statistics.fmean(vals) if vals else float('nan')

    first_stage = rows_per_seed[0][0]['stage']
    groups = {
        'first norm, stage 1': lambda r: r['first'] and r['stage'] == first_stage,
        'first norm, later stages': lambda r: r['first'] and r['stage'] != first_stage,
        'other shared-block norms': lambda r: not r['first'],
    }
    return {g: mean_std([avg(rows, pick) for rows in rows_per_seed]) for g, pick in groups.items()}


@contextlib.contextmanager
def torch_threads(num: Optional[int]):
    """Run with ``num`` torch threads (``None``: unchanged), restored afterwards."""
    was = torch.get_num_threads()
    if num:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (data workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def save_json(data: dict, path: str) -> None:
    """Write ``data`` atomically (the study saves after every run, so an interrupted
    study keeps what it measured)."""
    ensure_dir(osp.dirname(path) or '.')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def timing_line(data: dict) -> str:
    """The report's time line: CPU time (user + sys) is what the "under an hour on 2 CPU
    cores" budget is about (CPU-seconds / 2); wall time depends on what else ran."""
    runs = data['runs']
    cpu = data.get('cpu_s')
    text = (f'- Time: wall {data["wall_s"] / 60:.1f} min (training '
            f'{sum(r["train_s"] for r in runs) / 60:.1f} min, testing '
            f'{sum(r["test_s"] for r in runs) / 60:.1f} min)')
    if cpu is not None:
        text += (f'; CPU (user + sys) {cpu / 60:.1f} min, i.e. {cpu / 120:.1f} min on 2 fully '
                 f'used cores; torch threads: {data["setup"].get("threads") or "default"}')
    text += '.'
    if not data.get('complete', True):
        setup = data['setup']
        planned = len(setup['seeds']) * len(setup['variants'])
        text += (f' **Interrupted: only the {len(runs)} of {planned} run(s) listed under '
                 '"Per seed" finished.**')
        estimate = planned_cpu_seconds(data)
        if estimate is not None:
            text += (f' The whole planned study would take about {estimate / 60:.0f} CPU '
                     f'minutes ({estimate / 120:.0f} min on 2 cores), from the mean CPU time '
                     'of each variant\'s finished runs.')
    return text


def planned_cpu_seconds(data: dict) -> Optional[float]:
    """CPU seconds of every planned run (seeds x variants), each variant at the mean of
    its finished runs; ``None`` while some variant has no finished run."""
    setup, total = data['setup'], 0.0
    for variant in setup['variants']:
        cpu = [r['cpu_s'] for r in data['runs'] if r['variant'] == variant and 'cpu_s' in r]
        if not cpu:
            return None
        total += statistics.fmean(cpu) * len(setup['seeds'])
    return total


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def backbone_mflops(backbone, input_shape, skips) -> Dict[str, float]:
    """Backbone multiply-adds (M) of each sub-network, mmengine's FlopAnalyzer."""
    from mmadn.analysis import count_flops
    x = torch.zeros(1, *input_shape)
    out = {}
    was = backbone.skip
    for skip in skips:
        with backbone.skipping(skip):
            out[backbone.skip_str] = count_flops(backbone, x) / 1e6
    backbone.set_skip(was)
    return out


# ----------------------------------------------------------------------------------------
# Report pieces shared by both tasks. ``runs``: list of dict(variant, seed, results, ...),
# ``results`` maps a skip string ('static' for the base-depth network) to its metrics.
# ----------------------------------------------------------------------------------------
def values(runs: List[dict], variant: str, skip: str, metric: str) -> List[float]:
    """``metric`` of sub-network ``skip`` of ``variant``, one value per seed (the plain
    base-depth network answers for the base-net skip only)."""
    out = []
    for r in runs:
        if r['variant'] != variant:
            continue
        key = skip
        if variant == 'base':
            key = 'static' if skip == r.get('base_skip') else None
        m = r['results'].get(key, {}) if key else {}
        if metric in m:
            out.append(float(m[metric]))
    return out


def main_table(runs, variants, metrics, super_skip, base_skip, digits=1,
               descriptions: Optional[Dict[str, str]] = None) -> str:
    """variant | description | <metric> super | <metric> base ... (mean ± std over seeds);
    ``descriptions`` (variant -> text) defaults to :data:`VARIANTS`'."""
    header = ['variant', 'what']
    for _, label in metrics:
        header += [f'{label} super-net ({super_skip})', f'{label} base-net ({base_skip})']
    rows = []
    for v in variants:
        row = [f'`{v}`', (descriptions or {k: d[2] for k, d in VARIANTS.items()})[v]]
        for key, _ in metrics:
            row += [
                fmt_ms(values(runs, v, super_skip, key), digits),
                fmt_ms(values(runs, v, base_skip, key), digits)
            ]
        rows.append(row)
    return md_table(header, rows)


def per_seed_table(runs, metrics, super_skip, base_skip, digits=1) -> str:
    header = ['seed', 'variant']
    for _, label in metrics:
        header += [f'{label} {super_skip}', f'{label} {base_skip}']
    header += ['train s (wall)', 'test s (wall)', 'CPU s']
    rows = []
    for r in runs:
        row = [r['seed'], f"`{r['variant']}`"]
        for key, _ in metrics:
            for skip in (super_skip, base_skip):
                v = values([r], r['variant'], skip, key)
                row.append(f'{v[0]:.{digits}f}' if v else 'n/a')
        row += [
            f"{r['train_s']:.0f}", f"{r['test_s']:.0f}",
            f"{r['cpu_s']:.0f}" if 'cpu_s' in r else 'n/a'
        ]
        rows.append(row)
    return md_table(header, rows)


def compare(runs, a: Tuple[str, str], b: Tuple[str, str], metric: str, claim: str,
            digits: int = 1) -> List[str]:
    """A row of the checks table: claim, mean ± std of (variant, skip) ``a`` and ``b``,
    the difference and a verdict (``a > b``; 'within noise' when the difference of the
    means is smaller than the larger of the two standard deviations)."""
    va, vb = values(runs, *a, metric), values(runs, *b, metric)
    (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
    if math.isnan(ma) or math.isnan(mb):
        return [claim, 'n/a', 'n/a', 'n/a', 'not measured']
    diff = ma - mb
    noise = max(sa, sb)
    text = verdict(diff > 0)
    if len(va) > 1 and abs(diff) <= noise:
        text += ' (within noise)'
    return [
        claim, f'{a[0]} {a[1]}: {fmt_ms(va, digits)}', f'{b[0]} {b[1]}: {fmt_ms(vb, digits)}',
        f'{diff:+.{digits}f}', text
    ]


CHECK_HEADER = ['claim', 'A', 'B', 'A - B', 'verdict (A > B)']


def standard_checks(runs, variants, metric, super_skip, base_skip, digits=1) -> List[list]:
    """The paper's comparisons in one list of rows (only for the variants that ran)."""
    has = set(variants)
    rows = []
    S, B = super_skip, base_skip
    if {'adn', 'plain'} <= has:
        rows.append(
            compare(runs, ('adn', B), ('plain', B), metric,
                    'ADN base-net beats naive skipping of a normally trained net', digits))
        rows.append(
            compare(runs, ('adn', S), ('plain', S), metric,
                    'ADN super-net beats the individual super-depth network', digits))
    if {'adn', 'base'} <= has:
        rows.append(
            compare(runs, ('adn', B), ('base', B), metric,
                    'ADN base-net beats the individual base-depth network', digits))
    for other, what in (('adn_no_kd', 'without sub-path specialization (KD)'),
                        ('adn_no_skipbn', 'without skip-aware BN'), ('adn_neither',
                                                                     'without both')):
        if {'adn', other} <= has:
            for skip, net in ((S, 'super-net'), (B, 'base-net')):
                rows.append(
                    compare(runs, ('adn', skip), (other, skip), metric,
                            f'Table 3: ADN {net} beats ADN {what}', digits))
    return rows


def checks_table(rows: List[list]) -> str:
    """The checks as a table, or a sentence when no compared pair of variants ran."""
    if not rows:
        return '_No comparison: ADN and a variant it is compared with have not both run._'
    return md_table(CHECK_HEADER, rows)


def subnet_monotonicity(accs: Dict[str, float], tol: float) -> Tuple[int, int, float]:
    """For every pair of sub-networks where one skips exactly one more stage than the
    other: how many pairs lose at most ``tol`` (or gain) when that stage is skipped, out of
    how many, and the largest such one-step drop."""
    ok = total = 0
    worst = 0.0
    for a, va in accs.items():
        for b, vb in accs.items():
            if len(a) != len(b):
                continue
            extra = [i for i in range(len(a)) if a[i] == 'F' and b[i] == 'T']
            if len(extra) == 1 and all(a[i] == b[i] for i in range(len(a)) if i != extra[0]):
                total += 1
                drop = va - vb
                worst = max(worst, drop)
                ok += drop <= tol
    return ok, total, worst


# ----------------------------------------------------------------------------------------
# The driver shared by both scripts
# ----------------------------------------------------------------------------------------
def add_common_args(parser, name: str, seeds: Sequence[int], skips: str,
                    variants: Sequence[str]) -> None:
    """The arguments both study scripts take (``name``: 'cls' or 'det')."""
    parser.add_argument('--seeds', type=int, nargs='+', default=list(seeds))
    parser.add_argument(
        '--skips', default=skips, help="sub-networks tested: 'all' or a comma-separated list (the "
        'super-net FFFF and the base-net TTTT are always added)')
    parser.add_argument('--variants', nargs='+', default=list(variants),
                        help=f'subset of {list(VARIANTS)}, run in this order')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', f'study_{name}'))
    parser.add_argument('--out', default=osp.join(ROOT, 'studies', 'results'))
    parser.add_argument(
        '--threads', type=int, default=None,
        help="torch threads (default: torch's); 1 when the two studies run "
        'side by side on 2 cores')
    parser.add_argument('--report-only', action='store_true',
                        help=f'rewrite the report and plots from <out>/study_{name}.json')


def run_all(args, cfg: Config, data: dict, json_path: str, tag: str, on_run=None) -> dict:
    """Train and test every ``args.variants`` x ``args.seeds`` (seed-major), saving ``data``
    (with ``runs`` appended) to ``json_path`` after every run. ``on_run(run, model)`` may
    add to a run; ``tag`` prefixes the progress lines."""
    t_start, cpu_start = time.perf_counter(), cpu_seconds()
    skips = data['skips']
    for seed in args.seeds:
        for variant in args.variants:
            vcfg = apply_variant(cfg, variant, skips)
            work_dir = osp.join(args.work_dir, f'{variant}_seed{seed}')
            cpu0 = cpu_seconds()
            results, model, times = run_variant(vcfg, work_dir, seed)
            run = dict(variant=variant, seed=seed, results=results, base_skip=BASE,
                       cpu_s=cpu_seconds() - cpu0, **times)
            if variant in ('adn', 'adn_no_kd'):
                run['bn'] = skip_norm_distances(model.backbone)
            if on_run is not None:
                on_run(run, model)
            data['runs'].append(run)
            shown = results.get(SUPER, results.get('static', {}))
            shown = ', '.join(f'{k} {v:.3f}' for k, v in shown.items() if isinstance(v, float))
            print(
                f'[{tag}] seed {seed} {variant:14s} {shown} ({times["train_s"]:.0f} s '
                f'train, {times["test_s"]:.0f} s test, {run["cpu_s"]:.0f} CPU s)', flush=True)
            data.update(wall_s=time.perf_counter() - t_start, cpu_s=cpu_seconds() - cpu_start,
                        complete=False)
            save_json(data, json_path)
    data['complete'] = True
    save_json(data, json_path)
    return data


def new_data(args, name: str, **extra) -> dict:
    """The JSON skeleton of a study: its setup (every argument and the command line)."""
    import sys
    command = f'python studies/study_{name}.py ' + ' '.join(sys.argv[1:])
    return dict(setup=dict(vars(args), command=command), runs=[], super_skip=SUPER, base_skip=BASE,
                skips=study_skips(args.skips), **extra)


def bn_runs(runs: List[dict], png: str) -> Dict[str, List[List[dict]]]:
    """Variant -> per-seed skip-norm distance rows of the runs that have them; plotted to
    ``png`` when there are any."""
    bn = {
        v: [r['bn'] for r in runs if r['variant'] == v and r.get('bn')]
        for v in ('adn', 'adn_no_kd')
    }
    bn = {v: rows for v, rows in bn.items() if rows}
    if bn:
        plot_bn_distances(bn, png)
    return bn


def study_main(name: str, args, run_study, write_report) -> dict:
    """Run the study (or, with ``--report-only``, reload its JSON) and write the report."""
    json_path = osp.join(args.out, f'study_{name}.json')
    if args.report_only:
        with open(json_path) as f:
            data = json.load(f)
    else:
        with torch_threads(args.threads):
            data = run_study(args, json_path)
    path = write_report(data, args.out)
    print(f'[study_{name}] report: {path} ({data["wall_s"] / 60:.1f} min wall)')
    return data
