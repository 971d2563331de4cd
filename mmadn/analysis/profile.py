"""Profile the sub-networks of one ADN model (GFLOPs, parameters, latency) and choose one
by budget.

Latency is measured interleaved (every round runs each sub-network once, A B C A B C ...,
in a rotating order), so drifts in machine load hit all sub-networks alike; the figure is
the median over rounds. On CUDA each timed call is synchronized.
"""
import csv
import json
import math
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar

from ..models.layers import AdaptiveDepthMixin, find_adn_backbone
from ..models.layers.skip import SkipLike, resolve_skips
from ..utils.fileio import read_json
from .complexity import count_active_params, count_flops

ProfileRows = List[Dict[str, Union[str, float]]]


def profile_forward(model: nn.Module) -> Tuple[Callable, str]:
    """What to measure and how it is called: a classifier runs whole (backbone, neck and
    head, as in the papers' classification FLOPs); a detector runs its feature extractor
    (backbone + neck), whose cost is the part that changes with depth."""
    model = model.module if is_model_wrapper(model) else model
    if isinstance(model, AdaptiveDepthMixin):
        return model, 'backbone'
    try:
        from mmpretrain.models.classifiers import ImageClassifier
        if isinstance(model, ImageClassifier):
            return (lambda x: model(x, mode='tensor')), 'classifier'
    except ImportError:  # pragma: no cover - mmpretrain is a dependency
        pass
    if hasattr(model, 'extract_feat'):
        return model.extract_feat, 'backbone+neck' if getattr(model, 'with_neck', False) \
            else 'backbone'
    return model.backbone, 'backbone'


def measure_latency(fns: Mapping[str, Callable[[], object]], warmup: int = 2, repeats: int = 10,
                    progress: bool = False,
                    setup: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
    """Median wall time (ms) of each callable, measured interleaved.

    Args:
        fns: name -> callable taking no argument.
        warmup: untimed calls of each callable first.
        repeats: timed rounds; each round calls every callable once, in an order rotated
            by one each round.
        setup: called with the name before each call, outside the timed region (e.g. to
            switch a model to that sub-network).

    Returns:
        name -> ``dict(median_ms, p25_ms, p75_ms, runs)``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f'repeats={repeats!r}, warmup={warmup!r}: expected repeats >= 1 '
                         'and warmup >= 0')
    names = list(fns)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: Dict[str, List[float]] = {n: [] for n in names}
    bar = ProgressBar(warmup + repeats) if progress else None
    with torch.no_grad():
        for rnd in range(warmup + repeats):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                if setup is not None:
                    setup(name)
                sync()
                start = time.perf_counter()
                fns[name]()
                sync()
                if rnd >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
            if bar is not None:
                bar.update()
    if bar is not None:
        print()
    out = {}
    for name, ts in times.items():
        q = torch.tensor(ts, dtype=torch.float64).quantile(
            torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        out[name] = dict(median_ms=q[1], p25_ms=q[0], p75_ms=q[2], runs=len(ts))
    return out


def profile_subnets(model: nn.Module, inputs: torch.Tensor,
                    skips: Optional[Sequence[SkipLike]] = None, latency: bool = True,
                    warmup: int = 2, repeats: int = 10, progress: bool = False) -> ProfileRows:
    """GFLOPs, active parameters and (optionally) latency of each sub-network.

    Args:
        model: a detector or classifier with an ADN backbone, or an ADN backbone.
        inputs: a batch as the model's forward takes it (after the data preprocessor);
            GFLOPs and parameters are counted on its first image, latency is measured on
            the whole batch.
        skips: the sub-networks: a list of skip values, ``'all'`` (the default: all of
            them, super-net first) or a comma-separated string such as ``'FFFF,TTTT'``.

    Returns:
        One dict per sub-network: ``skip``, ``gflops`` (per image), ``params_m``
        (millions), ``latency_ms`` (median, per batch) and ``latency_p25_ms`` /
        ``latency_p75_ms``, ``batch_size``, and ``scope`` (what was measured:
        ``classifier``, ``backbone+neck`` or ``backbone``).
    """
    backbone = find_adn_backbone(model)
    forward, scope = profile_forward(model)
    skips = list(backbone.subnet_skips()) if skips is None else resolve_skips(
        skips, backbone.num_skippable_stages)
    saved = backbone.skip
    was_training = model.training
    model.eval()
    rows: ProfileRows = []
    try:
        bar = ProgressBar(len(skips)) if progress else None
        for skip in skips:
            backbone.set_skip(skip)
            one = inputs[:1]
            rows.append(
                dict(skip=backbone.skip_str, scope=scope,
                     gflops=count_flops(model, one, forward) / 1e9,
                     params_m=count_active_params(model, one, forward) / 1e6))
            if bar is not None:
                bar.update()
        if bar is not None:
            print()
        if latency:
            fns = {row['skip']: (lambda: forward(inputs)) for row in rows}
            timing = measure_latency(fns, warmup=warmup, repeats=repeats, progress=progress,
                                     setup=backbone.set_skip)
            for row in rows:
                t = timing[row['skip']]
                row.update(latency_ms=t['median_ms'], latency_p25_ms=t['p25_ms'],
                           latency_p75_ms=t['p75_ms'], batch_size=len(inputs))
    finally:
        backbone.set_skip(saved)
        model.train(was_training)
    return rows


# -- results, Pareto front, budgets --------------------------------------------------------


def load_accuracy(results: Union[str, Mapping[str, Mapping[str,
                                                           float]]], metric: Optional[str] = None,
                  scope: Optional[str] = None) -> Tuple[Dict[str, float], str]:
    """Accuracy per sub-network from ``subnet_results.json`` (written by
    ``tools/test.py --skip``) or the same mapping: ``skip -> metrics``. ``metric`` defaults
    to the first of ``accuracy/top1``, ``coco/bbox_mAP``, ``coco/segm_mAP`` present.

    ``scope`` (a profile's: ``'classifier'``, ``'backbone+neck'``, ``'backbone'``) refuses
    the metric of the other task (a classifier's ``accuracy/...`` for a detector, and the
    other way round). Every value must be a finite number."""
    source = f'{results}: ' if isinstance(results, str) else ''
    if isinstance(results, str):
        results = read_json(results, "the subnet_results.json of 'tools/test.py --skip'")
    if not isinstance(results, Mapping) or not all(
            isinstance(m, Mapping) for m in results.values()):
        raise ValueError(f'{source}expected skip -> metrics, as tools/test.py --skip writes')
    if not results:
        raise ValueError(f'{source}the results hold no sub-network')
    available = sorted({k for m in results.values() for k in m})
    if metric is None:
        metric = next(
            (k for k in ('accuracy/top1', 'coco/bbox_mAP', 'coco/segm_mAP') if k in available),
            None)
        if metric is None:
            raise ValueError(f'no default accuracy metric in the results; pass metric=, one '
                             f'of {available}')
    missing = [s for s, m in results.items() if metric not in m]
    if missing:
        raise ValueError(f'{source}metric={metric!r} is missing for {missing}; available: '
                         f'{available}')
    if scope is not None and metric.startswith('accuracy/') != (scope == 'classifier'):
        task = 'a classification' if metric.startswith('accuracy/') else 'a detection'
        model = 'a classifier' if scope == 'classifier' else f'a detector ({scope})'
        raise ValueError(f'{source}metric={metric!r} is {task} metric, but the model is '
                         f"{model}: give the results of this model's tools/test.py --skip run")
    accuracy = {}
    for skip, m in results.items():
        value = m[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f'{source}{metric} of {skip} is {value!r}: expected a finite '
                             'number')
        accuracy[skip] = float(value)
    return accuracy, metric


def pareto_front(points: Mapping[str, Tuple[float, float]]) -> List[str]:
    """Names of the points that no other point beats. ``points``: name -> (cost, value),
    lower cost and higher value better; a point is beaten by one with no more cost and no
    less value, better in one of them. Sorted by cost."""
    front = []
    for name, (cost, value) in points.items():
        if not any(oc <= cost and ov >= value and (oc < cost or ov > value)
                   for other, (oc, ov) in points.items() if other != name):
            front.append(name)
    return sorted(front, key=lambda n: points[n])


def select_subnet(profile: ProfileRows, max_latency_ms: Optional[float] = None,
                  max_gflops: Optional[float] = None,
                  accuracy: Optional[Mapping[str, float]] = None) -> str:
    """The most accurate sub-network within the budget(s).

    Args:
        profile: rows of :func:`profile_subnets` (or the JSON it was saved to, loaded).
        max_latency_ms / max_gflops: the budget; at least one.
        accuracy: skip -> accuracy (see :func:`load_accuracy`). Without it, the sub-network
            with the most GFLOPs within the budget is taken (in the paper's results accuracy
            grows with FLOPs across sub-networks).
    """
    if max_latency_ms is None and max_gflops is None:
        raise ValueError('give a budget: max_latency_ms=... and/or max_gflops=...')
    if max_latency_ms is not None and any('latency_ms' not in r for r in profile):
        raise ValueError('max_latency_ms needs a profile with latency (latency=True)')
    fits = [
        r for r in profile if (max_latency_ms is None or r['latency_ms'] <= max_latency_ms) and (
            max_gflops is None or r['gflops'] <= max_gflops)
    ]
    if not fits:
        cheapest = min(profile, key=lambda r: r['gflops'])
        have = f"{cheapest['gflops']:.3f} GFLOPs"
        if 'latency_ms' in cheapest:
            have += f", {cheapest['latency_ms']:.2f} ms"
        raise ValueError(
            f'no sub-network fits max_latency_ms={max_latency_ms}, max_gflops={max_gflops}; '
            f"the cheapest is {cheapest['skip']} ({have})")
    if accuracy is not None:
        missing = [r['skip'] for r in fits if r['skip'] not in accuracy]
        if missing:
            raise ValueError(f'accuracy is missing for {missing}')
        return max(fits, key=lambda r: (accuracy[r['skip']], r['gflops']))['skip']
    return max(fits, key=lambda r: r['gflops'])['skip']


def switch_to_budget(model: nn.Module, profile: ProfileRows, **budget) -> str:
    """:func:`select_subnet`, then switch ``model``'s ADN backbone to it; returns the skip."""
    skip = select_subnet(profile, **budget)
    find_adn_backbone(model).set_skip(skip)
    return skip


def save_profile(rows: ProfileRows, path: str) -> None:
    """``.json`` or ``.csv`` by the file's extension."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if path.endswith('.json'):
        with open(path, 'w') as f:
            json.dump(rows, f, indent=1)
    elif path.endswith('.csv'):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f'out={path!r}: expected a .json or .csv file name')


def plot_profile(rows: ProfileRows, path: str, accuracy: Optional[Mapping[str, float]] = None,
                 metric: str = 'accuracy') -> List[str]:
    """A PNG of latency (or ``accuracy``) against GFLOPs, one labelled point per
    sub-network, the Pareto front drawn as a line: with accuracy, the most accurate
    sub-networks for their GFLOPs; with latency, the sub-networks that no other one beats
    with more GFLOPs at no more latency. Returns the front's skips."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if accuracy is not None:
        # cost GFLOPs, value accuracy
        xy = {r['skip']: (r['gflops'], accuracy[r['skip']]) for r in rows}
        front = pareto_front(xy)
        ylabel = metric
    else:
        if any('latency_ms' not in r for r in rows):
            raise ValueError('a latency plot needs a profile with latency')
        xy = {r['skip']: (r['gflops'], r['latency_ms']) for r in rows}
        # cost latency, value GFLOPs (the capacity bought with that latency)
        front = pareto_front({n: (y, x) for n, (x, y) in xy.items()})
        front.sort(key=lambda n: xy[n])
        ylabel = 'latency (ms, median)'
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    xs, ys = zip(*xy.values())
    ax.scatter(xs, ys, color='tab:gray', label='sub-network')
    fx, fy = zip(*(xy[n] for n in front))
    ax.plot(fx, fy, '-o', color='tab:red', label='Pareto front')
    for name, (x, y) in xy.items():
        ax.annotate(name, (x, y), textcoords='offset points', xytext=(3, 3), fontsize=7)
    scope = rows[0].get('scope', '')
    ax.set_xlabel(f'GFLOPs ({scope})' if scope else 'GFLOPs')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front
