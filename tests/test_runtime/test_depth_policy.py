"""The depth policy on plain numbers: latencies in, the level of the next call out. No
model, no clock."""
import logging
import math

import pytest

from mmadn.runtime import DepthPolicy, nearest_rank_quantile

# expected ms of four levels, cheapest first; with a 13 ms budget a move aims at
# 0.8 x 13 = 10.4 ms or less
LEVELS = ['TTTT', 'TTFF', 'TFFF', 'FFFF']
EXPECTED = dict(TTTT=5.0, TTFF=7.0, TFFF=8.5, FFFF=10.0)
LOGGER = logging.getLogger('mmadn.test.policy')


def _policy(budget_ms=13.0, **kw):
    kw.setdefault('warmup', 0)
    return DepthPolicy(LEVELS, EXPECTED, budget_ms, logger=LOGGER, **kw)


def _feed(policy, latencies):
    """Observe each latency; return the skip each call ran (the one before its observe)."""
    ran = []
    for ms in latencies:
        ran.append(policy.skip)
        policy.observe(ms)
    return ran


def _run(policy, n, latency):
    """``n`` calls, each taking ``latency(i, skip)`` ms at the skip the policy chose."""
    ran = []
    for i in range(n):
        ran.append(policy.skip)
        policy.observe(latency(i, policy.skip))
    return ran


def _moves(ran):
    return [(i, a, b) for i, (a, b) in enumerate(zip(ran, ran[1:]), 1) if a != b]


def test_starts_at_the_deepest_level_and_stays_within_the_budget():
    policy = _policy()
    assert policy.skip == 'FFFF' and policy.level == 3 and policy.patience == 5
    assert _feed(policy, [10.0] * 30) == ['FFFF'] * 30
    assert _policy(start='TTFF').skip == 'TTFF'


def test_a_missed_budget_moves_down_to_the_deepest_level_within_the_headroom():
    policy = _policy()
    # one call at 14 ms is not enough (down_after=2); the second makes the p90 miss 13 ms:
    # at 1.4x, TFFF would take 11.9 ms (> 10.4), TTFF 9.8 ms
    assert policy.observe(14.0) == 'FFFF'
    assert policy.observe(14.0) == 'TTFF'
    assert policy.level == 1
    # the history restarts at the new level: its first call alone does not move again
    assert policy.observe(9.8 * 1.5) == 'TTFF'


def test_a_large_slowdown_moves_several_levels_at_once():
    policy = _policy()
    _feed(policy, [19.0, 19.0])  # 1.9x: TTFF 13.3 ms, TTTT 9.5 ms
    assert policy.skip == 'TTTT'
    policy = _policy()
    _feed(policy, [30.0, 30.0])  # 3x: no level fits, the cheapest it is
    assert policy.skip == 'TTTT'


def test_one_slow_call_in_ten_is_ignored_two_are_not():
    policy = _policy()
    _feed(policy, [10.0] * 9 + [30.0] + [10.0] * 5)  # p90 of each 10 leaves one out
    assert policy.skip == 'FFFF'
    assert policy.observe(30.0) == 'TTTT'  # two of the last ten at 3x: 30 ms seen
    assert nearest_rank_quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 0.9) == 9
    assert nearest_rank_quantile([1, 100], 0.9) == 100
    assert nearest_rank_quantile([3, 1, 2], 0.5) == 2
    with pytest.raises(ValueError, match='no values'):
        nearest_rank_quantile([], 0.9)


def test_the_cheapest_level_missing_stays_and_warns_once(caplog):
    policy = _policy(start='TTTT')
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        assert _feed(policy, [15.0] * 20) == ['TTTT'] * 20
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        'budget_ms=13 is missed even by the cheapest sub-network TTTT (p90 '
        '15.0 ms over the last calls); staying at it'
    ]


def test_moves_up_only_after_patience_calls_with_room():
    policy = _policy(start='TTTT')
    assert _feed(policy, [5.0] * 4) == ['TTTT'] * 4
    assert policy.observe(5.0) == 'FFFF'  # 5 calls at 1x: FFFF 10 ms within 10.4 ms
    # at 1.1x FFFF would take 11 ms: up to TFFF (9.35 ms) only
    policy = _policy(start='TTTT')
    _feed(policy, [5.5] * 5)
    assert policy.skip == 'TFFF'
    # the slowest of the last 5 calls decides: one at 1.4x leaves room for TTFF only
    policy = _policy(start='TTTT')
    _feed(policy, [5.0, 5.0, 7.0, 5.0, 5.0])
    assert policy.skip == 'TTFF'
    # a deeper level expected within the budget but not within the headroom is not taken:
    # at 9/7 of TTFF's 7 ms, TFFF would take 10.9 ms (< 13, > 10.4)
    policy = _policy(start='TTFF')
    assert _feed(policy, [9.0] * 50) == ['TTFF'] * 50


def test_patience_doubles_after_a_failed_move_up_and_resets_after_one_that_holds():
    # a load the expected latencies do not know: FFFF takes 15 ms, TTTT its 5 ms
    policy = _policy(start='TTTT', max_patience=15)
    ran = _run(policy, 80, lambda i, skip: 15.0 if skip == 'FFFF' else EXPECTED[skip])
    # up after 5 calls; two at 1.5x: down to TTTT (7.5 ms; TTFF 10.5), patience 10, then 15
    # (capped), 15
    assert _moves(ran) == [(5, 'TTTT', 'FFFF'), (7, 'FFFF', 'TTTT'), (17, 'TTTT', 'FFFF'),
                           (19, 'FFFF', 'TTTT'), (34, 'TTTT', 'FFFF'), (36, 'FFFF', 'TTTT'),
                           (51, 'TTTT', 'FFFF'), (53, 'FFFF', 'TTTT'), (68, 'TTTT', 'FFFF'),
                           (70, 'FFFF', 'TTTT')]
    assert policy.patience == 15
    # once FFFF keeps to its expected latency, the next move up (15 calls after the last
    # move down) holds, and 10 calls (window) at FFFF later the patience is back to 5
    ran = _run(policy, 14, lambda i, skip: EXPECTED[skip])
    assert _moves(ran) == [(5, 'TTTT', 'FFFF')] and policy.patience == 15
    policy.observe(10.0)
    assert policy.patience == 5
    # a load pulse now costs 5 calls of waiting after it ends, not 15
    ran = _run(policy, 30, lambda i, skip: EXPECTED[skip] * (1.4 if i < 10 else 1.0))
    assert _moves(ran) == [(2, 'FFFF', 'TTFF'), (15, 'TTFF', 'FFFF')]


def test_warmup_calls_are_ignored_after_every_start():
    policy = _policy(warmup=3)
    assert _feed(policy, [100.0] * 3) == ['FFFF'] * 3  # ignored: no move, no history
    assert policy.observe(14.0) == 'FFFF'  # the first counted call: down_after=2
    assert policy.observe(14.0) == 'TTFF'
    policy.reset('TTTT')
    assert _feed(policy, [100.0] * 3 + [5.0] * 4) == ['TTTT'] * 7  # warm-up again
    assert policy.observe(5.0) == 'FFFF'


def test_a_new_budget_applies_from_the_next_call_and_a_bad_one_changes_nothing():
    policy = _policy()
    _feed(policy, [10.0] * 10)
    policy.set_budget(9.0)  # FFFF (10 ms) misses; TTFF (7 ms) is within 0.8 x 9 = 7.2 ms
    assert policy.observe(10.0) == 'TTFF'
    with pytest.raises(
            ValueError, match=r'budget_ms=4 is below the latency of the cheapest '
            r'sub-network, TTTT \(5\.00 ms, profile\): expected '
            r'a budget of at least 5\.00 ms'):
        policy.set_budget(4)
    with pytest.raises(ValueError, match=r'budget_ms=-1: expected a positive number'):
        policy.set_budget(-1)
    assert policy.budget_ms == 9.0 and policy.skip == 'TTFF'


def test_new_expected_latencies_restart_at_the_deepest_level():
    policy = _policy()
    _feed(policy, [14.0, 14.0])
    assert policy.skip == 'TTFF'
    policy.set_expected(dict(TTTT=6.0, TTFF=8.0, TFFF=10.0, FFFF=12.0))
    assert policy.skip == 'FFFF' and policy.source == 'calibrated'
    assert policy.expected_ms == dict(TTTT=6.0, TTFF=8.0, TFFF=10.0, FFFF=12.0)
    assert policy.observe(12.0) == 'FFFF' and policy.observe(13.5) == 'TTFF'  # 1.125x
    with pytest.raises(
            ValueError, match=r'budget_ms=13 is below the latency of the cheapest '
            r'sub-network, TTTT \(14\.00 ms, calibrated\)'):
        policy.set_expected(dict(TTTT=14.0, TTFF=15.0, TFFF=16.0, FFFF=17.0))
    with pytest.raises(
            ValueError, match=r"expected_ms\['TFFF'\]=None: expected a positive "
            r'number of milliseconds for every level'):
        policy.set_expected(dict(TTTT=6.0, TTFF=8.0, FFFF=12.0))
    assert policy.expected_ms['TTTT'] == 6.0 and policy.skip == 'TTFF'  # unchanged


@pytest.mark.parametrize('kw, match', [
    (dict(budget_ms=0), r'budget_ms=0: expected a positive number of milliseconds'),
    (dict(budget_ms='40'), r"budget_ms='40': expected a positive number"),
    (dict(budget_ms=True), r'budget_ms=True: expected a positive number'),
    (dict(budget_ms=math.inf), r'budget_ms=inf: expected a positive number'),
    (dict(quantile=1.5), r'quantile=1.5: expected a number in \(0, 1\], e.g. 0.9 for p90'),
    (dict(headroom=0), r'headroom=0: expected a number in \(0, 1\], e.g. 0.8'),
    (dict(window=0), r'window=0: expected an integer >= 1'),
    (dict(window=2.5), r'window=2.5: expected an integer >= 1'),
    (dict(down_after=True), r'down_after=True: expected an integer >= 1'),
    (dict(max_patience=0), r'max_patience=0: expected an integer >= 1'),
    (dict(warmup=-1), r'warmup=-1: expected an integer >= 0'),
    (dict(up_after=12), r'down_after=2, up_after=12, window=10: expected down_after and '
     r'up_after <= window'),
    (dict(start='FTTT'), r"start='FTTT': expected one of the front \['TTTT', 'TTFF', "
     r"'TFFF', 'FFFF'\]"),
    (dict(budget_ms=4), r'budget_ms=4 is below the latency of the cheapest sub-network, '
     r'TTTT \(5\.00 ms, profile\)'),
    (dict(levels=[]), r'levels=\[\]: expected distinct skips, cheapest first'),
    (dict(levels=['TTTT', 'TTTT']), r"levels=\['TTTT', 'TTTT'\]: expected distinct"),
    (dict(expected_ms=dict(EXPECTED, TTFF=-1)), r"expected_ms\['TTFF'\]=-1: expected a "
     r'positive number of milliseconds'),
])
def test_bad_settings_name_the_value_and_the_accepted_form(kw, match):
    kw = dict(dict(levels=LEVELS, expected_ms=EXPECTED, budget_ms=13.0), **kw)
    with pytest.raises(ValueError, match=match):
        DepthPolicy(**kw)
