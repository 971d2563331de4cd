"""Hold a latency budget while the program runs by changing the depth of an ADN model.

The controller times every call of a model (or of an inferencer around it), gives each
latency to a :class:`~mmadn.runtime.policy.DepthPolicy` moving along the Pareto front of the
model's sub-network profile, and switches the depth the policy chooses. A switch costs one
``backbone.set_skip`` by default; nothing is rebuilt or reloaded.
"""
import logging
import math
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..analysis import load_accuracy, measure_latency, pareto_front
from ..analysis.profile import profile_forward
from ..models.layers import find_adn_backbone
from ..models.layers.skip import SkipLike, format_skip, parse_skip
from ..utils.fileio import read_json
from .onnx_model import OnnxDepthModel
from .policy import DepthPolicy

ProfileLike = Union[str, Sequence[Mapping]]


def _model_of(target) -> nn.Module:
    if isinstance(target, nn.Module):
        return target
    model = getattr(target, 'model', None)
    if isinstance(model, nn.Module):
        return model  # mmdet's DetInferencer, mmpretrain's ImageClassificationInferencer
    raise TypeError(f'target of type {type(target).__name__}: expected a model with an ADN '
                    'backbone (nn.Module), an inferencer holding one in .model '
                    '(DetInferencer, ImageClassificationInferencer) or an OnnxDepthModel')


def _load_profile(profile: ProfileLike) -> List[dict]:
    if isinstance(profile, str):
        if not profile.endswith('.json'):
            raise ValueError(f'profile={profile!r}: expected the .json written by '
                             'profile_subnets / tools/analysis_tools/profile_subnets.py, '
                             'or its rows')
        profile = read_json(profile, 'the .json written by profile_subnets')
    if not isinstance(profile, (list, tuple)) or not profile \
            or not all(isinstance(r, Mapping) for r in profile):
        raise ValueError('profile: expected a non-empty list of rows (dicts with skip, '
                         'gflops, latency_ms) as profile_subnets returns')
    return [dict(r) for r in profile]


class DepthController:
    """Time each call of an ADN model and choose its depth so that calls stay within a
    latency budget while the load of the machine changes.

    The sub-networks it moves between are the Pareto front of the profile: the ones no
    other sub-network beats with more accuracy (or, without accuracies, more GFLOPs) at no
    more latency, ordered from the cheapest (level 0) to the deepest. After each call
    ``self.policy`` (a :class:`~mmadn.runtime.policy.DepthPolicy`) chooses the next level
    from the call's latency and the levels' expected ones (the profile's until calibrated).

    Args:
        target: a detector / classifier with an ADN backbone, an inferencer holding one
            in ``.model`` (mmdet's ``DetInferencer``, mmpretrain's
            ``ImageClassificationInferencer``), or an
            :class:`~mmadn.runtime.OnnxDepthModel` (an ONNX Runtime session of a
            dynamic-depth file, whose ``set_skip`` sets the ``skip`` input of its runs).
        profile: rows of :func:`mmadn.analysis.profile_subnets` (``skip``, ``gflops``,
            ``latency_ms``, ...) measured on this model, or the ``.json`` they were saved
            to. Rows whose skips do not fit the model's backbone are refused.
        budget_ms (float): the latency budget of one call, in milliseconds.
        accuracy: ``skip -> accuracy`` or a ``subnet_results.json`` of
            ``tools/test.py --skip`` (see :func:`mmadn.analysis.load_accuracy`); the front is
            then the most accurate sub-networks for their latency.
        metric (str, optional): the metric of an ``accuracy`` file.
        cost (str): what the front is drawn against, ``'latency'`` (the profile's) or
            ``'gflops'``: on a busy machine a profile's latencies are noisy, GFLOPs are
            not (without accuracies every sub-network is then on the front, by GFLOPs).
            :meth:`calibrate` fits the latency per call against the same quantity.
            Defaults to ``'latency'``.
        quantile, window, headroom, down_after, up_after, max_patience, warmup, logger:
            the settings of :class:`~mmadn.runtime.policy.DepthPolicy` (same defaults).
        fn (callable, optional): what one call runs; defaults to ``target`` itself
            (``target(*args, **kwargs)``), e.g. ``lambda x: model.test_step(x)``.
        clock (callable): returns seconds; defaults to ``time.perf_counter``.
        sync (bool, optional): synchronize CUDA after each call; by default when the
            model's parameters are on a CUDA device.
        start (str, optional): the sub-network to start from (a front member); defaults to
            the deepest.
        switch (callable, optional): what changes the depth, called with a skip string
            before each call and on each move; defaults to the backbone's ``set_skip``.
    """

    def __init__(self, target, profile: ProfileLike, budget_ms: float,
                 accuracy: Union[None, str, Mapping[str, float]] = None,
                 metric: Optional[str] = None, cost: str = 'latency', quantile: float = 0.9,
                 window: int = 10, headroom: float = 0.8, down_after: int = 2, up_after: int = 5,
                 max_patience: int = 20, warmup: int = 1, fn: Optional[Callable] = None,
                 clock: Callable[[], float] = time.perf_counter, sync: Optional[bool] = None,
                 start: SkipLike = None, logger: Union[str, logging.Logger, None] = 'current',
                 switch: Optional[Callable[[str], None]] = None):
        self.target = target
        if isinstance(target, OnnxDepthModel):
            # the session has the depth API itself; its runs return when their outputs are ready
            self.model, self.backbone, self._scope = None, target, target.scope
            sync = False if sync is None else sync
        else:
            self.model = _model_of(target)
            self.backbone = find_adn_backbone(self.model)
            self._scope = profile_forward(self.model)[1]
        self.fn = target if fn is None else fn
        self.switch = self.backbone.set_skip if switch is None else switch
        for name, value in (('fn', self.fn), ('switch', self.switch)):
            if not callable(value):
                raise TypeError(f'{name} of type {type(value).__name__} is not callable')
        if not callable(clock):
            raise TypeError(f'clock of type {type(clock).__name__}: expected a callable '
                            'returning seconds, e.g. time.perf_counter')
        self.clock = clock
        if sync is None:
            param = next(self.model.parameters(), None)
            sync = param is not None and param.is_cuda
        self.sync = bool(sync)

        if cost not in ('latency', 'gflops'):
            raise ValueError(f"cost={cost!r}: expected 'latency' or 'gflops'")
        self.cost = 'latency_ms' if cost == 'latency' else 'gflops'
        self.rows = self._check_profile(_load_profile(profile))
        if isinstance(accuracy, str):
            accuracy, metric = load_accuracy(accuracy, metric, profile_forward(self.model)[1])
        if accuracy is not None:
            missing = [r['skip'] for r in self.rows if r['skip'] not in accuracy]
            if missing:
                raise ValueError(f'accuracy is missing for the profile\'s sub-networks '
                                 f'{missing}')
            accuracy = {s: float(v) for s, v in accuracy.items()}
        self.accuracy = accuracy
        self.metric = metric
        by_skip = {r['skip']: r for r in self.rows}
        value = (lambda s: accuracy[s]) if accuracy is not None else \
            (lambda s: by_skip[s]['gflops'])
        levels = pareto_front({s: (r[self.cost], value(s)) for s, r in by_skip.items()})
        self.policy = DepthPolicy(levels, {s: by_skip[s]['latency_ms']
                                           for s in levels}, budget_ms, quantile=quantile,
                                  window=window, headroom=headroom, down_after=down_after,
                                  up_after=up_after, max_patience=max_patience, warmup=warmup,
                                  start=self._skip_of(start), logger=logger)
        self.fit: Optional[dict] = None
        self.log: List[dict] = []
        self.switch(self.skip)

    # -- checks ------------------------------------------------------------------------

    def _check_profile(self, rows: List[dict]) -> List[dict]:
        n = self.backbone.num_skippable_stages
        name = type(self.backbone).__name__
        scope = self._scope
        seen = set()
        for i, row in enumerate(rows):
            try:
                skip = format_skip(parse_skip(row.get('skip'), n))
            except ValueError as err:
                raise ValueError(
                    f'profile row {i} does not fit this model ({name} with {n} skippable '
                    f'stages), is the profile from another model? {err}') from None
            if scope is not None and row.get('scope', scope) != scope:
                raise ValueError(
                    f"profile row {i} ({skip}) was measured on a {row['scope']!r}, this "
                    f'model is profiled as {scope!r}: is the profile from another model?')
            for key in ('latency_ms', 'gflops'):
                v = row.get(key)
                if isinstance(v, bool) or not isinstance(v, (int, float)) \
                        or not math.isfinite(v) or v <= 0:
                    raise ValueError(f'profile row {i} ({skip}): {key}={v!r}, expected a '
                                     'positive number (profile_subnets(..., latency=True))')
            if skip in seen:
                raise ValueError(f'profile row {i}: {skip} appears twice')
            seen.add(skip)
            row.update(skip=skip, latency_ms=float(row['latency_ms']), gflops=float(row['gflops']))
        return rows

    def _skip_of(self, skip: SkipLike) -> Optional[str]:
        return None if skip is None else \
            format_skip(parse_skip(skip, self.backbone.num_skippable_stages))

    # -- state (the policy's) ----------------------------------------------------------

    def set_budget(self, budget_ms: float) -> None:
        """Change the budget (e.g. when the frame rate changes); the depth follows from the
        next call on."""
        self.policy.set_budget(budget_ms)

    def reset(self, start: SkipLike = None) -> None:
        """Start again at ``start`` (default: the deepest level) with no history of
        latencies (the log is kept)."""
        self.policy.reset(self._skip_of(start))
        self.switch(self.skip)

    # the policy's state, read through
    budget_ms = property(lambda self: self.policy.budget_ms)
    levels = property(lambda self: self.policy.levels, doc='The front, cheapest first.')
    expected_ms = property(lambda self: self.policy.expected_ms)
    level = property(lambda self: self.policy.level)
    skip = property(lambda self: self.policy.skip, doc='The sub-network the next call runs.')
    calibrated = property(lambda self: self.fit is not None)

    @property
    def switches(self) -> int:
        """How many logged calls ran another sub-network than the call before."""
        return sum(a['skip'] != b['skip'] for a, b in zip(self.log, self.log[1:]))

    # -- calls -------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Run one call at the current depth, time it, log it and choose the next depth.
        Returns what the call returned."""
        skip = self.skip
        self.switch(skip)  # someone else may have changed the depth
        start = self.clock()
        out = self.fn(*args, **kwargs)
        if self.sync:
            torch.cuda.synchronize()
        latency_ms = (self.clock() - start) * 1e3
        self.log.append(dict(time=start, latency_ms=latency_ms, skip=skip))
        self.observe(latency_ms)
        return out

    def observe(self, latency_ms: float) -> str:
        """Take the latency of one call at the current depth into account, switch the
        depth if the policy moves and return the sub-network of the next call
        (``__call__`` does this; call it yourself when you time the calls)."""
        before = self.skip
        skip = self.policy.observe(latency_ms)
        if skip != before:
            self.switch(skip)
        return skip

    # -- calibration and results -------------------------------------------------------

    def calibrate(self, *args, warmup: int = 1, repeats: int = 3, **kwargs) -> Dict[str, float]:
        """Time each front sub-network through the controlled call itself
        (``fn(*args, **kwargs)``, interleaved, median of ``repeats``) and expect, from then
        on, ``a + b * cost`` per call (the profile's latency or GFLOPs, see ``cost``; least
        squares over the front, ``b >= 0``), then start again from the deepest level.

        A detector's profile times its backbone + neck only; a whole call also runs the
        heads and the pre- and post-processing, a cost that does not depend on the depth
        (``a``). A fit over all levels is less hurt by one noisy timing than each level's
        own median, and keeps the expected latencies in the order of the front.

        Returns:
            skip -> the measured median latency (ms) of each front sub-network.
        """
        fns = {s: (lambda: self.fn(*args, **kwargs)) for s in self.levels}
        measured = measure_latency(fns, warmup=warmup, repeats=repeats, setup=self.switch)
        latency = {s: t['median_ms'] for s, t in measured.items()}
        profiled = {r['skip']: r[self.cost] for r in self.rows}
        xs = [profiled[s] for s in self.levels]
        ys = [latency[s] for s in self.levels]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx)**2 for x in xs)
        slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var) if var else 0
        self.policy.set_expected({s: my + slope * (profiled[s] - mx) for s in self.levels})
        self.fit = dict(intercept_ms=my - slope * mx, slope=slope)
        self.switch(self.skip)
        return latency

    def summary(self, start: int = 0, stop: Optional[int] = None) -> dict:
        """Figures of the logged calls ``log[start:stop]``: how many, the share over budget,
        the mean GFLOPs per call (of the profile) and the mean accuracy (given one), the
        number of moves, and how many calls each sub-network ran."""
        calls = self.log[start:stop]
        if not calls:
            raise ValueError(f'no logged call in log[{start}:{stop}] ({len(self.log)} '
                             'logged)')
        gflops = {r['skip']: r['gflops'] for r in self.rows}
        n = len(calls)
        out = dict(calls=n, over_budget=sum(c['latency_ms'] > self.budget_ms for c in calls) / n,
                   mean_gflops=sum(gflops[c['skip']] for c in calls) / n,
                   switches=sum(a['skip'] != b['skip'] for a, b in zip(calls, calls[1:])))
        out['calls_per_skip'] = {
            s: sum(c['skip'] == s for c in calls)
            for s in dict.fromkeys(c['skip'] for c in calls)
        }
        if self.accuracy is not None:
            out['mean_accuracy'] = sum(self.accuracy[c['skip']] for c in calls) / n
        return out
