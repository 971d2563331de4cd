"""The controller's decisions on scripted latencies: a clock that advances by what a call
"takes" at the depth the model is really switched to, so no test sleeps."""
import logging

import pytest
import torch

import mmadn  # noqa: F401
from mmadn.analysis import profile_subnets
from mmadn.models.backbones import ResNetADN
from mmadn.runtime import DepthController, nearest_rank_quantile

# ms and GFLOPs of five sub-networks; FTTT is beaten by TFFF (less latency, more GFLOPs)
LATENCY = dict(TTTT=5.0, TTFF=7.0, TFFF=8.5, FTTT=9.0, FFFF=10.0)
GFLOPS = dict(TTTT=1.0, TTFF=1.5, TFFF=1.8, FTTT=1.2, FFFF=2.0)
PROFILE = [dict(skip=s, gflops=GFLOPS[s], latency_ms=LATENCY[s]) for s in LATENCY]
FRONT = ['TTTT', 'TTFF', 'TFFF', 'FFFF']


class World:
    """A fake clock and a model call whose duration is the profile latency of the skip the
    backbone is at, times the load of the machine at that call (or a scripted function)."""

    def __init__(self, backbone, load=lambda i: 1.0, latency=None):
        self.backbone, self.load, self.now, self.calls = backbone, load, 100.0, 0
        self.latency = latency or (lambda i, skip: LATENCY[skip] * self.load(i))

    def clock(self):
        return self.now

    def call(self, x=None):
        self.now += self.latency(self.calls, self.backbone.skip_str) / 1e3
        self.calls += 1
        return self.backbone.skip_str


@pytest.fixture(scope='module')
def backbone():
    return ResNetADN(depth=18, base_channels=8).eval()


def _controller(backbone, world, budget_ms=13.0, **kw):
    backbone.set_skip('FFFF')
    return DepthController(backbone, PROFILE, budget_ms, fn=world.call, clock=world.clock, **kw)


def _run(ctrl, n):
    return [ctrl() for _ in range(n)]


def _moves(log):
    return [(i, a['skip'], b['skip']) for i, (a, b) in enumerate(zip(log, log[1:]), 1)
            if a['skip'] != b['skip']]


def test_front_and_log_follow_the_profile_and_the_clock(backbone):
    world = World(backbone)
    ctrl = _controller(backbone, world)
    assert ctrl.levels == FRONT and ctrl.skip == 'FFFF'  # FTTT is off the front
    ran = _run(ctrl, 30)
    assert ran == ['FFFF'] * 30  # what the model really ran: the call returns it
    assert ctrl.switches == 0 and ctrl.summary()['over_budget'] == 0
    assert [c['latency_ms'] for c in ctrl.log] == pytest.approx([10.0] * 30)
    assert [c['time'] for c in ctrl.log] == pytest.approx([100 + 0.01 * i for i in range(30)])
    assert ctrl.summary()['mean_gflops'] == pytest.approx(2.0)


def test_load_step_moves_down_at_once_far_enough_and_back_up_after_it_ends(backbone):
    # calls 0-19 unloaded, 20-59 under a 1.4x slowdown, 60-89 unloaded again
    world = World(backbone, load=lambda i: 1.4 if 20 <= i < 60 else 1.0)
    ctrl = _controller(backbone, world)
    _run(ctrl, 90)
    # two loaded calls at FFFF (14 ms > 13) make the p90 of the last 10 miss; the deepest
    # level with 1.4x its latency within 0.8 * 13 = 10.4 ms is TTFF (9.8 ms; TFFF 11.9)
    # under load TFFF would take 11.9 ms > 10.4: no move up; 5 unloaded calls at TTFF
    # leave FFFF (10 ms) within 10.4 ms: straight back up
    assert _moves(ctrl.log) == [(22, 'FFFF', 'TTFF'), (65, 'TTFF', 'FFFF')]
    over = [i for i, c in enumerate(ctrl.log) if c['latency_ms'] > 13.0]
    assert over == [20, 21]
    assert ctrl.summary(22, 60)['over_budget'] == 0
    assert ctrl.summary(22, 60)['mean_gflops'] == pytest.approx(GFLOPS['TTFF'])
    assert ctrl.summary()['calls_per_skip'] == dict(FFFF=22 + 25, TTFF=43)


def test_noise_around_the_budget_moves_once_and_does_not_flap(backbone):
    # from call 10 on, FFFF takes 12.8 / 13.2 ms by turns: half the calls miss by a little
    world = World(backbone, load=lambda i: 1.0 if i < 10 else (1.28 if i % 2 else 1.32))
    ctrl = _controller(backbone, world)
    _run(ctrl, 200)
    moves = _moves(ctrl.log)
    # calls 10 and 12 miss: the p90 of the last 10 is 13.2 ms; TTFF takes 9.0 / 9.2 ms
    assert moves == [(13, 'FFFF', 'TTFF')]  # and it stays: FFFF predicted 13.2 > 10.4
    assert ctrl.summary(13)['over_budget'] == 0


def test_one_slow_call_in_ten_is_ignored_two_are_not(backbone):
    spikes = {15: 3.0, 40: 3.0, 45: 3.0}
    world = World(backbone, load=lambda i: spikes.get(i, 1.0))
    ctrl = _controller(backbone, world)
    _run(ctrl, 41)
    assert ctrl.switches == 0  # p90 (nearest rank) of 10 leaves one outlier out
    _run(ctrl, 10)
    assert _moves(ctrl.log)[0] == (46, 'FFFF', 'TTTT')  # 30 ms seen: 3x everywhere
    assert nearest_rank_quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 0.9) == 9
    assert nearest_rank_quantile([1, 100], 0.9) == 100


def test_a_move_up_that_fails_doubles_the_patience(backbone):
    # a world the profile mispredicts: FFFF takes 15 ms though TTTT runs at its 5 ms
    world = World(backbone, latency=lambda i, skip: 15.0 if skip == 'FFFF' else LATENCY[skip])
    ctrl = _controller(backbone, world, start='TTTT', up_after=5, max_patience=40)
    _run(ctrl, 240)
    moves = _moves(ctrl.log)
    ups = [i for i, a, b in moves if b == 'FFFF']
    downs = [i for i, a, b in moves if a == 'FFFF']
    # TTTT predicts FFFF at 10 ms: up; two calls at 15 ms: down to the deepest level
    # with 1.5x its latency within 10.4 ms, TTTT (7.5 ms; TTFF 10.5)
    assert all(b == 'TTTT' for i, a, b in moves if a == 'FFFF')
    assert [d - u for u, d in zip(ups, downs)] == [2] * len(ups)
    # calls at TTTT before each move up: the first after warmup (1 call) + 5, then 10, 20,
    # 40, 40 (capped)
    waits = [ups[0]] + [u - d for d, u in zip(downs, ups[1:])]
    assert waits == [6, 10, 20, 40, 40, 40, 40][:len(waits)] and len(waits) >= 6
    assert ctrl.summary()['over_budget'] <= 2 * len(ups) / 240 + 1e-9
    # once FFFF keeps to its profile, the next move up (after 40 calls) holds and, after a
    # window of 10 calls, the patience is back to 5: a load pulse then costs 5 calls of
    # waiting after it ends, not 40
    world.latency = lambda i, skip: LATENCY[skip] * (1.4 if 300 <= i < 320 else 1.0)
    _run(ctrl, 100)
    later = [(i, a, b) for i, a, b in _moves(ctrl.log) if i > 240]
    assert later == [(250, 'TTTT', 'FFFF'), (302, 'FFFF', 'TTFF'), (325, 'TTFF', 'FFFF')]


def test_budget_below_cheapest_raises_or_warns_and_stays_at_the_cheapest(backbone, caplog):
    world = World(backbone)
    with pytest.raises(
            ValueError, match=r'budget_ms=4 is below the latency of the cheapest '
            r'sub-network, TTTT \(5\.00 ms, profile\): expected '
            r'a budget of at least 5\.00 ms'):
        _controller(backbone, world, budget_ms=4)
    # a load of 3x from call 5 to 59: even TTTT (15 ms) misses 13 ms
    world = World(backbone, load=lambda i: 3.0 if 5 <= i < 60 else 1.0)
    logger = logging.getLogger('mmadn.test.controller')
    ctrl = _controller(backbone, world, logger=logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        _run(ctrl, 100)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not at every call
    assert 'budget_ms=13 is missed even by the cheapest sub-network TTTT' in warnings[0]
    assert 'staying at it' in warnings[0]
    skips = [c['skip'] for c in ctrl.log]
    assert skips[6:60] == ['TTTT'] * 54
    # once the load is gone, 5 calls with room for FFFF take it back up, although the p90
    # of the last 10 calls at TTTT still misses
    assert skips.index('FFFF', 6) == 65 and skips[65:] == ['FFFF'] * 35


def test_a_new_budget_applies_from_the_next_calls(backbone):
    world = World(backbone)
    ctrl = _controller(backbone, world)
    _run(ctrl, 10)
    ctrl.set_budget(9.0)  # FFFF (10 ms) misses; TTFF (7 ms) is within 0.8 x 9 = 7.2 ms
    _run(ctrl, 10)
    assert _moves(ctrl.log) == [(11, 'FFFF', 'TTFF')]  # right after the first call
    with pytest.raises(ValueError, match=r'budget_ms=4 is below the latency of the cheapest'):
        ctrl.set_budget(4)
    with pytest.raises(ValueError, match=r'budget_ms=-1: expected a positive number'):
        ctrl.set_budget(-1)
    assert ctrl.budget_ms == 9.0


def test_accuracy_chooses_the_front(backbone):
    world = World(backbone)
    acc = dict(TTTT=0.5, TTFF=0.62, TFFF=0.6, FTTT=0.55, FFFF=0.7)
    ctrl = _controller(backbone, world, accuracy=acc)
    assert ctrl.levels == ['TTTT', 'TTFF', 'FFFF']  # TFFF: slower than TTFF, less accurate
    _run(ctrl, 5)
    assert ctrl.summary()['mean_accuracy'] == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"accuracy is missing .* \['FTTT'\]"):
        _controller(backbone, world, accuracy={k: v for k, v in acc.items() if k != 'FTTT'})


def test_a_front_by_gflops_takes_every_sub_network_in_gflops_order(backbone):
    ctrl = _controller(backbone, World(backbone), cost='gflops')
    assert ctrl.levels == ['TTTT', 'FTTT', 'TTFF', 'TFFF', 'FFFF']
    assert ctrl.expected_ms['FTTT'] == 9.0  # the profile's latency until calibrated


def test_a_profile_from_another_model_is_refused(backbone, tmp_path):
    x = torch.randn(1, 3, 32, 32)
    three = ResNetADN(depth=18, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                      out_indices=(0, 1, 2), base_channels=8)
    rows = profile_subnets(three, x, repeats=1, warmup=0)
    assert [r['skip'] for r in rows][:2] == ['FFF', 'FFT']
    with pytest.raises(
            ValueError, match=r"profile row 0 does not fit this model \(ResNetADN "
            r"with 4 skippable stages\), is the profile from "
            r"another model\? skip='FFF': expected 4 letters"):
        DepthController(backbone, rows, 100.0)
    classifier_rows = [dict(r, scope='classifier') for r in PROFILE]
    with pytest.raises(
            ValueError, match=r"measured on a 'classifier', this model is "
            r"profiled as 'backbone'"):
        DepthController(backbone, classifier_rows, 100.0)
    with pytest.raises(
            ValueError, match=r'profile row 1 \(TTFF\): latency_ms=None, expected '
            r'a positive number'):
        DepthController(backbone, [PROFILE[0], dict(skip='TTFF', gflops=1.0)], 100.0)
    with pytest.raises(ValueError, match='profile row 1: TTTT appears twice'):
        DepthController(backbone, [PROFILE[0], PROFILE[0]], 100.0)
    with pytest.raises(ValueError, match="profile='p.csv': expected the .json"):
        DepthController(backbone, 'p.csv', 100.0)
    with pytest.raises(TypeError, match='target of type str: expected a model with an ADN'):
        DepthController('model', PROFILE, 100.0)
    with pytest.raises(TypeError, match='has no ADN backbone'):
        DepthController(torch.nn.Linear(2, 2), PROFILE, 100.0)


@pytest.mark.parametrize('kw, match', [
    (dict(budget_ms=0), r'budget_ms=0: expected a positive number of milliseconds'),
    (dict(budget_ms='40'), r"budget_ms='40': expected a positive number"),
    (dict(quantile=1.5), r'quantile=1.5: expected a number in \(0, 1\]'),
    (dict(headroom=0), r'headroom=0: expected a number in \(0, 1\]'),
    (dict(window=0), r'window=0: expected an integer >= 1'),
    (dict(cost='time'), r"cost='time': expected 'latency' or 'gflops'"),
    (dict(up_after=12), r'down_after=2, up_after=12, window=10: expected down_after and '
     r'up_after <= window'),
    (dict(start='FTTT'), r"start='FTTT': expected one of the front \['TTTT', 'TTFF', "
     r"'TFFF', 'FFFF'\]"),
])
def test_bad_settings_name_the_value_and_the_accepted_form(backbone, kw, match):
    kw = dict(dict(budget_ms=13.0), **kw)
    with pytest.raises(ValueError, match=match):
        DepthController(backbone, PROFILE, **kw)


def test_the_depth_changes_only_through_switch(backbone):
    # a depth held outside the backbone (as an exported model's depth input would be): the
    # controller sets it through ``switch``, once at the start, before each call and on
    # each move, and never touches the backbone
    switched = []
    world = World(backbone, latency=lambda i, skip: LATENCY[switched[-1]] *
                  (1.4 if 2 <= i < 20 else 1.0))
    backbone.set_skip('TTTT')
    ctrl = DepthController(backbone, PROFILE, 13.0, fn=world.call, clock=world.clock,
                           switch=switched.append)
    assert switched == ['FFFF']
    _run(ctrl, 30)
    # call 0 is the warm-up; calls 1 and 2 (14 ms at the second) make the p90 miss; 5 calls
    # with room after the load ends (20-24) take it back up
    assert _moves(ctrl.log) == [(3, 'FFFF', 'TTFF'), (25, 'TTFF', 'FFFF')]
    assert switched[1:] == [c['skip'] for c in ctrl.log[:3]] + ['TTFF'] \
        + [c['skip'] for c in ctrl.log[3:25]] + ['FFFF'] + [c['skip'] for c in ctrl.log[25:]]
    assert backbone.skip_str == 'TTTT'
    # calibration times each level after switching to it (two levels: a fit through both
    # measured points, positive whatever the timings)
    switched, ran = [], []
    two = DepthController(backbone, [PROFILE[0], PROFILE[-1]], 13.0,
                          fn=lambda: ran.append(switched[-1]), switch=switched.append)
    measured = two.calibrate(warmup=0, repeats=2)
    assert switched[0] == 'FFFF' and ran == switched[1:-1] and len(ran) == 4
    assert sorted(ran) == ['FFFF', 'FFFF', 'TTTT', 'TTTT'] and set(measured) == set(ran)
    assert two.calibrated and switched[-1] == two.skip == 'FFFF'
    assert backbone.skip_str == 'TTTT'
    with pytest.raises(TypeError, match='switch of type str is not callable'):
        DepthController(backbone, PROFILE, 13.0, switch='TTTT')
