"""Validation / test loops that evaluate several sub-networks of one ADN model in one run.

Each sub-network's metrics are reported with its skip string as prefix
(``TTTT/coco/bbox_mAP``), so ``save_best`` can follow any of them, and a table puts the
sub-networks side by side.
"""
import contextlib
import csv
import json
import os.path as osp
from typing import Dict, Sequence, Union

import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import DumpResults
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner import TestLoop, ValLoop

try:  # mmengine >= 0.10.5 also reports the validation / test losses of a loop
    from mmengine.runner.loops import _parse_losses
except ImportError:  # older mmengine: its loops collect no losses, nothing to report
    _parse_losses = None

from ...analysis.profile import profile_subnets
from ...models.layers import find_adn_backbone
from ...models.layers.skip import format_skip, resolve_skips

SkipsArg = Union[str, Sequence]


def metrics_table(rows: Dict[str, dict]) -> str:
    """A plain-text table: one row per sub-network, one column per metric (metrics that
    are -1 everywhere, i.e. not applicable, are left out; a ``coco/``-style prefix shared
    by all prefixed metrics is dropped from the headers)."""
    keys = []
    for m in rows.values():
        keys += [k for k in m if k not in keys and isinstance(m[k], (int, float))]
    keys = [k for k in keys if any(m.get(k, -1) != -1 for m in rows.values())]
    prefixes = {k.split('/', 1)[0] for k in keys if '/' in k}
    strip = len(prefixes) == 1
    header = ['skip'] + [k.split('/', 1)[1] if strip and '/' in k else k for k in keys]
    body = [[skip] + [f'{m.get(k, float("nan")):.4g}' for k in keys] for skip, m in rows.items()]
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def fmt(row):
        return '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(row, widths)) + ' |'

    return '\n'.join([line, fmt(header), line] + [fmt(r) for r in body] + [line])


class _SubnetLoopMixin:

    def _write_results(self, stem: str) -> None:
        """``stem.json`` (skip -> metrics) and ``stem.csv`` (one row per sub-network)."""
        with open(stem + '.json', 'w') as f:
            json.dump(self.results, f, indent=1)
        keys = sorted({k for m in self.results.values() for k in m})
        with open(stem + '.csv', 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['skip'] + keys)
            for skip, m in self.results.items():
                writer.writerow([skip] + [m.get(k, '') for k in keys])
        print_log(f'per-sub-network results written to {stem}.json / .csv', logger='current')

    def _init_skips(self, skips: SkipsArg, profile: bool = False,
                    profile_repeats: int = 10) -> None:
        # parsed once, when the loop is built: a bad skip fails before any evaluation
        self.skips = resolve_skips(skips, self._backbone().num_skippable_stages)
        self.results: Dict[str, dict] = {}
        if profile_repeats < 1:
            raise ValueError(f'profile_repeats={profile_repeats!r}: expected an integer >= 1')
        self.profile, self.profile_repeats = profile, profile_repeats

    def _profile(self) -> None:
        """GFLOPs, parameters and latency of each evaluated sub-network, measured on the
        first batch of the loop's data (after the data preprocessor), added to its row."""
        model = self.runner.model
        model = model.module if is_model_wrapper(model) else model
        with torch.no_grad():
            batch = model.data_preprocessor(next(iter(self.dataloader)), False)
        inputs = batch['inputs']
        rows = profile_subnets(model, inputs, self.skips, repeats=self.profile_repeats)
        for row in rows:
            self.results[row['skip']].update(gflops=row['gflops'], params_m=row['params_m'],
                                             latency_ms=row['latency_ms'])
        print_log(
            f"GFLOPs / params (M) / latency (ms, median of {self.profile_repeats}, "
            f"interleaved) of the {rows[0]['scope']}, input "
            f'{tuple(inputs.shape)}', logger='current')

    @contextlib.contextmanager
    def _dump_per_subnet(self, name: str):
        """With several sub-networks, each ``DumpResults`` metric (``tools/test.py --out``)
        writes one file per sub-network, named by its skip: ``preds.pkl`` ->
        ``preds_FFFF.pkl``, ``preds_TTTT.pkl``."""
        dumps = [m for m in self.evaluator.metrics if isinstance(m, DumpResults)]
        if len(self.skips) < 2 or not dumps:
            yield
            return
        saved = [m.out_file_path for m in dumps]
        for metric, path in zip(dumps, saved):
            stem, ext = osp.splitext(path)
            metric.out_file_path = f'{stem}_{name}{ext}'
        try:
            yield
        finally:
            for metric, path in zip(dumps, saved):
                metric.out_file_path = path

    def _backbone(self):
        return find_adn_backbone(self.runner.model, user=type(self).__name__)

    def _run_subnets(self, stage: str) -> dict:
        self.runner.call_hook(f'before_{stage}')
        self.runner.call_hook(f'before_{stage}_epoch')
        self.runner.model.eval()
        backbone = self._backbone()
        all_metrics, self.results = {}, {}
        for skip in self.skips:
            name = format_skip(skip)
            setattr(self, f'{stage}_loss', {})
            with backbone.skipping(skip), self._dump_per_subnet(name):
                for idx, data_batch in enumerate(self.dataloader):
                    self.run_iter(idx, data_batch)
                metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
            losses = getattr(self, f'{stage}_loss')
            if losses and _parse_losses is not None:
                metrics.update(_parse_losses(losses, stage))
            self.results[name] = metrics
            all_metrics.update({f'{name}/{k}': v for k, v in metrics.items()})
        if self.profile:
            self._profile()
        print_log(f'{stage} results per sub-network:\n' + metrics_table(self.results),
                  logger='current')
        if stage == 'test' and is_main_process():
            self._write_results(osp.join(self.runner.log_dir, 'subnet_results'))
        self.runner.call_hook(f'after_{stage}_epoch', metrics=all_metrics)
        self.runner.call_hook(f'after_{stage}')
        return all_metrics


@LOOPS.register_module()
class SubnetValLoop(_SubnetLoopMixin, ValLoop):
    """``val_cfg = dict(type='SubnetValLoop', skips=('super', 'base'))``.

    Args:
        skips: sub-networks to evaluate: a list of skip values, ``'all'`` or a
            comma-separated string such as ``'FFFF,TTFF,TTTT'``.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False,
                 skips: SkipsArg = ('super', 'base')):
        super().__init__(runner, dataloader, evaluator, fp16)
        self._init_skips(skips)

    def run(self) -> dict:
        return self._run_subnets('val')


@LOOPS.register_module()
class SubnetTestLoop(_SubnetLoopMixin, TestLoop):
    """``test_cfg = dict(type='SubnetTestLoop', skips='all')``; see :class:`SubnetValLoop`.

    Args:
        profile: also measure each sub-network's GFLOPs, active parameters and latency
            (:func:`mmadn.analysis.profile_subnets`, on the first test batch) and add them
            to its row: ``gflops``, ``params_m``, ``latency_ms``.
        profile_repeats: timed rounds of the latency measurement.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False,
                 skips: SkipsArg = ('super', 'base'), profile: bool = True,
                 profile_repeats: int = 10):
        super().__init__(runner, dataloader, evaluator, fp16)
        self._init_skips(skips, profile, profile_repeats)

    def run(self) -> dict:
        return self._run_subnets('test')
