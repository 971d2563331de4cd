"""Hold a latency budget while the program runs by changing the depth of an ADN model.

The controller times every call of a model (or of an inferencer around it) and moves along
the Pareto front of the model's sub-network profile: to a cheaper sub-network when the
budget is missed, back to a deeper one when there is room. A move costs one
``backbone.set_skip``; nothing is rebuilt or reloaded.
"""
import json
import logging
import math
import time
from collections import deque
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..analysis import load_accuracy, measure_latency, pareto_front
from ..models.layers import find_adn_backbone
from ..analysis.profile import profile_forward
from ..models.layers.skip import SkipLike, format_skip, parse_skip

ProfileLike = Union[str, Sequence[Mapping]]


def nearest_rank_quantile(values: Sequence[float], q: float) -> float:
    """The ``ceil(q * n)``-th smallest of ``values`` (a value that occurred, never an
    interpolation): with ``q=0.9`` one outlier among 10 values is ignored, one among 9 or
    fewer is not."""
    if not values:
        raise ValueError('no values')
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _model_of(target) -> nn.Module:
    if isinstance(target, nn.Module):
        return target
    model = getattr(target, 'model', None)
    if isinstance(model, nn.Module):
        return model  # mmdet's DetInferencer, mmpretrain's ImageClassificationInferencer
    raise TypeError(f'target of type {type(target).__name__}: expected a model with an ADN '
                    'backbone (nn.Module) or an inferencer holding one in .model '
                    '(DetInferencer, ImageClassificationInferencer)')


def _load_profile(profile: ProfileLike) -> List[dict]:
    if isinstance(profile, str):
        if not profile.endswith('.json'):
            raise ValueError(f'profile={profile!r}: expected the .json written by '
                             'profile_subnets / tools/analysis_tools/profile_subnets.py, '
                             'or its rows')
        with open(profile) as f:
            profile = json.load(f)
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
    more latency, ordered from the cheapest (level 0) to the deepest. Latencies seen at the
    current level are kept as *slowdowns* (seen / expected latency of that level), over a
    window that restarts at every move. After each call:

    * **down** when the ``quantile`` of the latencies seen at this level (at least
      ``down_after`` of them) is over the budget: to the deepest level whose expected
      latency times that slowdown is within ``headroom * budget_ms`` (several levels at
      once if needed; the cheapest when none is). If the cheapest level itself misses, a
      warning is logged and the controller stays there.
    * **up** when each of the last ``patience`` calls at this level would have left the
      deepest such level within ``headroom * budget_ms``. ``patience`` starts at
      ``up_after``; a move up that has to come down again within ``window`` calls doubles it
      (up to ``max_patience``), one that holds for ``window`` calls resets it. Missing the
      budget by a little never lifts the depth, and a move up that failed is not retried
      at once: the controller does not flap.

    Args:
        target: a detector / classifier with an ADN backbone, or an inferencer holding one
            in ``.model`` (mmdet's ``DetInferencer``, mmpretrain's
            ``ImageClassificationInferencer``).
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
        quantile (float): which quantile of the recent latencies must meet the budget
            (nearest rank). Defaults to 0.9.
        window (int): how many calls at the current level the quantile looks at.
            Defaults to 10.
        headroom (float): a move (down or up) aims at ``headroom * budget_ms`` or less;
            the gap to the budget is the hysteresis band. Defaults to 0.8.
        down_after (int): calls at a level before it can be left downwards. Defaults to 2.
        up_after (int): calls with room before moving up. Defaults to 5.
        max_patience (int): the most calls with room asked before moving up after failed
            moves up. Defaults to 20.
        warmup (int): first calls that are timed and logged but do not count (the first
            calls of a model are slow). Defaults to 1.
        fn (callable, optional): what one call runs; defaults to ``target`` itself
            (``target(*args, **kwargs)``), e.g. ``lambda x: model.test_step(x)``.
        clock (callable): returns seconds; defaults to ``time.perf_counter``.
        sync (bool, optional): synchronize CUDA after each call; by default when the
            model's parameters are on a CUDA device.
        start (str, optional): the sub-network to start from (a front member); defaults to
            the deepest.
        logger: where moves (DEBUG) and budget warnings (WARNING) go, as mmengine's
            ``print_log`` takes it. Defaults to ``'current'``.
    """

    def __init__(self,
                 target,
                 profile: ProfileLike,
                 budget_ms: float,
                 accuracy: Union[None, str, Mapping[str, float]] = None,
                 metric: Optional[str] = None,
                 cost: str = 'latency',
                 quantile: float = 0.9,
                 window: int = 10,
                 headroom: float = 0.8,
                 down_after: int = 2,
                 up_after: int = 5,
                 max_patience: int = 20,
                 warmup: int = 1,
                 fn: Optional[Callable] = None,
                 clock: Callable[[], float] = time.perf_counter,
                 sync: Optional[bool] = None,
                 start: SkipLike = None,
                 logger: Union[str, logging.Logger, None] = 'current'):
        self.target = target
        self.model = _model_of(target)
        self.backbone = find_adn_backbone(self.model)
        self.fn = target if fn is None else fn
        if not callable(self.fn):
            raise TypeError(f'fn of type {type(self.fn).__name__} is not callable')
        if not callable(clock):
            raise TypeError(f'clock of type {type(clock).__name__}: expected a callable '
                            'returning seconds, e.g. time.perf_counter')
        self.clock = clock
        self._check_settings(budget_ms, quantile, window, headroom, down_after, up_after,
                             max_patience, warmup)
        self.budget_ms = float(budget_ms)
        self.quantile, self.window, self.headroom = float(quantile), int(window), headroom
        self.down_after, self.up_after = int(down_after), int(up_after)
        self.max_patience, self.warmup = max(int(max_patience), int(up_after)), int(warmup)
        if sync is None:
            param = next(self.model.parameters(), None)
            sync = param is not None and param.is_cuda
        self.sync = bool(sync)
        self.logger = logger

        if cost not in ('latency', 'gflops'):
            raise ValueError(f"cost={cost!r}: expected 'latency' or 'gflops'")
        self.cost = 'latency_ms' if cost == 'latency' else 'gflops'
        self.rows = self._check_profile(_load_profile(profile))
        if isinstance(accuracy, str):
            accuracy, metric = load_accuracy(accuracy, metric)
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
        self.levels: List[str] = pareto_front(
            {s: (r[self.cost], value(s)) for s, r in by_skip.items()})
        self.expected_ms: Dict[str, float] = {s: by_skip[s]['latency_ms']
                                              for s in self.levels}
        self.calibrated, self.fit = False, None
        self._check_budget('profile')
        self.log: List[dict] = []
        self.reset(start)

    # -- checks ------------------------------------------------------------------------

    @staticmethod
    def _check_settings(budget_ms, quantile, window, headroom, down_after, up_after,
                        max_patience, warmup) -> None:
        def bad(name, value, form):
            raise ValueError(f'{name}={value!r}: expected {form}')

        if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) \
                or not math.isfinite(budget_ms) or budget_ms <= 0:
            bad('budget_ms', budget_ms, 'a positive number of milliseconds')
        if not 0 < quantile <= 1:
            bad('quantile', quantile, 'a number in (0, 1], e.g. 0.9 for p90')
        if not 0 < headroom <= 1:
            bad('headroom', headroom, 'a number in (0, 1], e.g. 0.8')
        for name, value, low in (('window', window, 1), ('down_after', down_after, 1),
                                 ('up_after', up_after, 1), ('max_patience', max_patience, 1),
                                 ('warmup', warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                bad(name, value, f'an integer >= {low}')
        if down_after > window or up_after > window:
            raise ValueError(f'down_after={down_after}, up_after={up_after}, '
                             f'window={window}: expected down_after and up_after <= window')

    def _check_profile(self, rows: List[dict]) -> List[dict]:
        n = self.backbone.num_skippable_stages
        name = type(self.backbone).__name__
        scope = profile_forward(self.model)[1]
        seen = set()
        for i, row in enumerate(rows):
            try:
                skip = format_skip(parse_skip(row.get('skip'), n))
            except ValueError as err:
                raise ValueError(
                    f'profile row {i} does not fit this model ({name} with {n} skippable '
                    f'stages), is the profile from another model? {err}') from None
            if row.get('scope', scope) != scope:
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
            row.update(skip=skip, latency_ms=float(row['latency_ms']),
                       gflops=float(row['gflops']))
        return rows

    def set_budget(self, budget_ms: float) -> None:
        """Change the budget (e.g. when the frame rate changes); the depth follows from the
        next call on."""
        self._check_settings(budget_ms, self.quantile, self.window, self.headroom,
                             self.down_after, self.up_after, self.max_patience, self.warmup)
        saved, self.budget_ms = self.budget_ms, float(budget_ms)
        try:
            self._check_budget('calibrated' if self.calibrated else 'profile')
        except ValueError:
            self.budget_ms = saved
            raise

    def _check_budget(self, source: str) -> None:
        cheapest = self.levels[0]
        if self.expected_ms[cheapest] > self.budget_ms:
            raise ValueError(
                f'budget_ms={self.budget_ms:g} is below the latency of the cheapest '
                f'sub-network, {cheapest} ({self.expected_ms[cheapest]:.2f} ms, {source}): '
                f'expected a budget of at least {self.expected_ms[cheapest]:.2f} ms')

    # -- state -------------------------------------------------------------------------

    def reset(self, start: SkipLike = None) -> None:
        """Start again at ``start`` (default: the deepest level) with no history of
        latencies (the log is kept)."""
        if start is None:
            self.level = len(self.levels) - 1
        else:
            skip = format_skip(parse_skip(start, self.backbone.num_skippable_stages))
            if skip not in self.levels:
                raise ValueError(f'start={start!r}: expected one of the front '
                                 f'{self.levels}')
            self.level = self.levels.index(skip)
        self._slowdowns = deque(maxlen=max(self.window, self.max_patience))
        self.patience = self.up_after
        self._last_move_up = False
        self._warned = False
        self._to_skip = self.warmup
        self.backbone.set_skip(self.skip)

    @property
    def skip(self) -> str:
        """The sub-network the next call runs."""
        return self.levels[self.level]

    @property
    def switches(self) -> int:
        """How many logged calls ran another sub-network than the call before."""
        return sum(a['skip'] != b['skip'] for a, b in zip(self.log, self.log[1:]))

    # -- calls -------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Run one call at the current depth, time it, log it and choose the next depth.
        Returns what the call returned."""
        skip = self.skip
        self.backbone.set_skip(skip)  # someone else may have changed the depth
        start = self.clock()
        out = self.fn(*args, **kwargs)
        if self.sync:
            torch.cuda.synchronize()
        latency_ms = (self.clock() - start) * 1e3
        self.log.append(dict(time=start, latency_ms=latency_ms, skip=skip))
        self.observe(latency_ms)
        return out

    def observe(self, latency_ms: float) -> None:
        """Take the latency of one call at the current depth into account and move if
        needed (``__call__`` does this; call it yourself when you time the calls)."""
        if self._to_skip > 0:
            self._to_skip -= 1
            return
        self._slowdowns.append(latency_ms / self.expected_ms[self.skip])
        n = len(self._slowdowns)
        if n >= self.window and self._last_move_up:
            self._last_move_up = False  # the last move up held: back to the base patience
            self.patience = self.up_after
        recent = list(self._slowdowns)[-self.window:]
        seen = nearest_rank_quantile(recent, self.quantile) * self.expected_ms[self.skip]
        missed = n >= self.down_after and seen > self.budget_ms
        if missed and self.level > 0:
            slowdown = seen / self.expected_ms[self.skip]
            target = max([j for j in range(self.level)
                          if slowdown * self.expected_ms[self.levels[j]]
                          <= self.headroom * self.budget_ms] or [0])
            if self._last_move_up:  # the move up did not hold
                self.patience = min(2 * self.patience, self.max_patience)
            self._move(target, seen)
            return
        if missed and not self._warned:
            self._warned = True
            print_log(f'budget_ms={self.budget_ms:g} is missed even by the cheapest '
                      f'sub-network {self.skip} (p{self.quantile * 100:g} {seen:.1f} ms over '
                      'the last calls); staying at it', logger=self.logger,
                      level=logging.WARNING)
        if n >= self.patience and self.level < len(self.levels) - 1:
            slowdown = max(list(self._slowdowns)[-self.patience:])
            fits = [j for j in range(self.level + 1, len(self.levels))
                    if slowdown * self.expected_ms[self.levels[j]]
                    <= self.headroom * self.budget_ms]
            if fits:
                self._move(max(fits), seen)

    def _move(self, level: int, seen: float) -> None:
        up = level > self.level
        print_log(f'{self.skip} -> {self.levels[level]} (p{self.quantile * 100:g} '
                  f'{seen:.1f} ms, budget {self.budget_ms:g} ms)', logger=self.logger,
                  level=logging.DEBUG)
        self.level = level
        self._slowdowns.clear()
        self._last_move_up = up
        self._warned = False
        self.backbone.set_skip(self.skip)

    # -- calibration and results -------------------------------------------------------

    def calibrate(self, *args, warmup: int = 1, repeats: int = 3, **kwargs) -> Dict[str, float]:
        """Time each front sub-network through the controlled call itself
        (``fn(*args, **kwargs)``, interleaved, median of ``repeats``) and expect, from then
        on, ``a + b * cost`` per call (the profile's latency or GFLOPs, see ``cost``; least
        squares over the front, ``b >= 0``),
        then start again from the deepest level.

        A detector's profile times its backbone + neck only; a whole call also runs the
        heads and the pre- and post-processing, a cost that does not depend on the depth
        (``a``). A fit over all levels is less hurt by one noisy timing than each level's
        own median, and keeps the expected latencies in the order of the front.

        Returns:
            skip -> the measured median latency (ms) of each front sub-network.
        """
        fns = {s: (lambda: self.fn(*args, **kwargs)) for s in self.levels}
        measured = measure_latency(fns, warmup=warmup, repeats=repeats,
                                   setup=self.backbone.set_skip)
        latency = {s: t['median_ms'] for s, t in measured.items()}
        profiled = {r['skip']: r[self.cost] for r in self.rows}
        xs = [profiled[s] for s in self.levels]
        ys = [latency[s] for s in self.levels]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var) if var else 0
        self.expected_ms = {s: my + slope * (profiled[s] - mx) for s in self.levels}
        self.fit = dict(intercept_ms=my - slope * mx, slope=slope)
        self.calibrated = True
        self._check_budget('calibrated')
        self.reset()
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
        out = dict(calls=len(calls),
                   over_budget=sum(c['latency_ms'] > self.budget_ms for c in calls)
                   / len(calls),
                   mean_gflops=sum(gflops[c['skip']] for c in calls) / len(calls),
                   switches=sum(a['skip'] != b['skip'] for a, b in zip(calls, calls[1:])),
                   calls_per_skip={s: sum(c['skip'] == s for c in calls)
                                   for s in dict.fromkeys(c['skip'] for c in calls)})
        if self.accuracy is not None:
            out['mean_accuracy'] = sum(self.accuracy[c['skip']] for c in calls) / len(calls)
        return out
