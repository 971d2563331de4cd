"""The depth decision on plain numbers: latencies of calls in, the level of the next call out
(no model, no clock: :class:`~mmadn.runtime.DepthController` times calls, switches depth)."""
import logging
import math
from collections import deque
from typing import List, Mapping, Optional, Sequence, Union

from mmengine.logging import print_log


def nearest_rank_quantile(values: Sequence[float], q: float) -> float:
    """The ``ceil(q * n)``-th smallest of ``values`` (a value that occurred, never an
    interpolation): with ``q=0.9`` one outlier among 10 values is ignored, one among 9 or
    fewer is not."""
    if not values:
        raise ValueError('no values')
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and value > 0


class DepthPolicy:
    """Choose the level of the next call from the latencies of the calls so far, so that
    calls stay within a latency budget while the load of the machine changes.

    Latencies seen at the current level are kept as *slowdowns* (seen / expected latency of
    that level), over a window that restarts at every move. After each call:

    * **down** when the ``quantile`` of the latencies seen at this level (at least
      ``down_after`` of them) is over the budget: to the deepest level whose expected
      latency times that slowdown is within ``headroom * budget_ms`` (several levels at
      once if needed; the cheapest when none is). If the cheapest level itself misses, a
      warning is logged once and the policy stays there.
    * **up** when each of the last ``patience`` calls at this level would have left the
      deepest such level within ``headroom * budget_ms``. ``patience`` starts at
      ``up_after``; a move up that has to come down again within ``window`` calls doubles it
      (up to ``max_patience``), one that holds for ``window`` calls resets it. Missing the
      budget by a little never lifts the depth, and a move up that failed is not retried
      at once: the policy does not flap.

    Args:
        levels: the skip strings it moves between, from the cheapest (level 0) to the
            deepest (e.g. a Pareto front).
        expected_ms: skip -> the expected latency (ms) of one call at each level.
        budget_ms (float): the latency budget of one call, in milliseconds.
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
        warmup (int): first calls after a (re)start that do not count (the first calls of
            a model are slow). Defaults to 1.
        start (str, optional): the level to start at; defaults to the deepest.
        logger: where moves (DEBUG) and budget warnings (WARNING) go, as mmengine's
            ``print_log`` takes it. Defaults to ``'current'``.
    """

    def __init__(self, levels: Sequence[str], expected_ms: Mapping[str, float], budget_ms: float,
                 quantile: float = 0.9, window: int = 10, headroom: float = 0.8,
                 down_after: int = 2, up_after: int = 5, max_patience: int = 20, warmup: int = 1,
                 start: Optional[str] = None, logger: Union[str, logging.Logger, None] = 'current'):
        self.check_settings(budget_ms, quantile, window, headroom, down_after, up_after,
                            max_patience, warmup)
        self.levels: List[str] = list(levels)
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f'levels={levels!r}: expected distinct skips, cheapest first')
        self.budget_ms = float(budget_ms)
        self.quantile, self.window, self.headroom = float(quantile), window, headroom
        self.down_after, self.up_after = down_after, up_after
        self.max_patience, self.warmup = max(max_patience, up_after), warmup
        self.logger = logger
        self.set_expected(expected_ms, 'profile', start)

    @staticmethod
    def check_settings(budget_ms, quantile, window, headroom, down_after, up_after, max_patience,
                       warmup) -> None:
        """Raise a ``ValueError`` naming the first bad setting and its accepted form."""

        def bad(name, value, form):
            raise ValueError(f'{name}={value!r}: expected {form}')

        if not _positive(budget_ms):
            bad('budget_ms', budget_ms, 'a positive number of milliseconds')
        if not 0 < quantile <= 1:
            bad('quantile', quantile, 'a number in (0, 1], e.g. 0.9 for p90')
        if not 0 < headroom <= 1:
            bad('headroom', headroom, 'a number in (0, 1], e.g. 0.8')
        for name, value, low in (('window', window, 1), ('down_after', down_after, 1),
                                 ('up_after', up_after, 1), ('max_patience', max_patience,
                                                             1), ('warmup', warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                bad(name, value, f'an integer >= {low}')
        if down_after > window or up_after > window:
            raise ValueError(f'down_after={down_after}, up_after={up_after}, '
                             f'window={window}: expected down_after and up_after <= window')

    def _check_budget(self, budget_ms: float, expected_ms: Mapping[str, float],
                      source: str) -> None:
        cheapest = self.levels[0]
        if expected_ms[cheapest] > budget_ms:
            raise ValueError(f'budget_ms={budget_ms:g} is below the latency of the cheapest '
                             f'sub-network, {cheapest} ({expected_ms[cheapest]:.2f} ms, {source}): '
                             f'expected a budget of at least {expected_ms[cheapest]:.2f} ms')

    def set_budget(self, budget_ms: float) -> None:
        """Change the budget (e.g. when the frame rate changes); it applies from the next
        observed call on. A bad budget raises and leaves the old one."""
        self.check_settings(budget_ms, self.quantile, self.window, self.headroom, self.down_after,
                            self.up_after, self.max_patience, self.warmup)
        self._check_budget(float(budget_ms), self.expected_ms, self.source)
        self.budget_ms = float(budget_ms)

    def set_expected(self, expected_ms: Mapping[str, float], source: str = 'calibrated',
                     start: Optional[str] = None) -> None:
        """Take new expected latencies (ms) of the levels and start again as :meth:`reset`
        does (the history was judged against the old ones). ``source`` (e.g. a calibration)
        is named if the budget is below the cheapest level. Bad latencies change nothing."""
        bad = [s for s in self.levels if not _positive(expected_ms.get(s))]
        if bad:
            raise ValueError(f'expected_ms[{bad[0]!r}]={expected_ms.get(bad[0])!r}: expected '
                             'a positive number of milliseconds for every level')
        expected = {s: float(expected_ms[s]) for s in self.levels}
        self._check_budget(self.budget_ms, expected, source)
        self.expected_ms, self.source = expected, source
        self.reset(start)

    def reset(self, start: Optional[str] = None) -> None:
        """Start again at ``start`` (default: the deepest level) with no history of
        latencies, the base patience and ``warmup`` calls to ignore."""
        if start is not None and start not in self.levels:
            raise ValueError(f'start={start!r}: expected one of the front {self.levels}')
        self.level = len(self.levels) - 1 if start is None else self.levels.index(start)
        self._slowdowns = deque(maxlen=max(self.window, self.max_patience))
        self.patience = self.up_after
        self._last_move_up = False
        self._warned = False
        self._warmup_left = self.warmup

    @property
    def skip(self) -> str:
        """The level the next call runs."""
        return self.levels[self.level]

    def observe(self, latency_ms: float) -> str:
        """Take the latency of one call at the current level into account, move if needed
        and return the skip of the next call."""
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return self.skip
        expected = self.expected_ms[self.skip]
        self._slowdowns.append(latency_ms / expected)
        n = len(self._slowdowns)
        if n >= self.window and self._last_move_up:
            self._last_move_up = False  # the last move up held: back to the base patience
            self.patience = self.up_after
        recent = list(self._slowdowns)[-self.window:]
        seen = nearest_rank_quantile(recent, self.quantile) * expected
        missed = n >= self.down_after and seen > self.budget_ms
        if missed and self.level > 0:
            if self._last_move_up:  # the move up did not hold
                self.patience = min(2 * self.patience, self.max_patience)
            self._move(max(self._within(range(self.level), seen / expected) or [0]), seen)
            return self.skip
        if missed and not self._warned:
            self._warned = True
            print_log(
                f'budget_ms={self.budget_ms:g} is missed even by the cheapest '
                f'sub-network {self.skip} (p{self.quantile * 100:g} {seen:.1f} ms over '
                'the last calls); staying at it', logger=self.logger, level=logging.WARNING)
        if n >= self.patience and self.level < len(self.levels) - 1:
            slowdown = max(list(self._slowdowns)[-self.patience:])
            fits = self._within(range(self.level + 1, len(self.levels)), slowdown)
            if fits:
                self._move(max(fits), seen)
        return self.skip

    def _within(self, levels: range, slowdown: float) -> List[int]:
        """The levels among ``levels`` expected within ``headroom * budget_ms`` at
        ``slowdown``."""
        return [
            j for j in levels
            if slowdown * self.expected_ms[self.levels[j]] <= self.headroom * self.budget_ms
        ]

    def _move(self, level: int, seen: float) -> None:
        print_log(
            f'{self.skip} -> {self.levels[level]} (p{self.quantile * 100:g} '
            f'{seen:.1f} ms, budget {self.budget_ms:g} ms)', logger=self.logger,
            level=logging.DEBUG)
        self._last_move_up = level > self.level
        self.level = level
        self._slowdowns.clear()
        self._warned = False
