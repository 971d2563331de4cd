"""How long a depth switch takes, against rebuilding the model at that depth.

    python benchmarks/bench_depth_switch.py [--depth 50] [--repeats 200]

Prints the median time of ``backbone.set_skip(...)`` (cycling through all sub-networks) and
of building a fresh ResNetADN and loading the same weights (what a non-adaptive model would
need), measured interleaved in one run, and their ratio.
"""
import argparse
import statistics
import time

import torch

import mmadn  # noqa: F401
from mmadn.models.backbones import ResNetADN


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args()
    model = ResNetADN(depth=args.depth)
    state = model.state_dict()
    skips = list(model.subnet_skips())
    switch, rebuild = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for s in skips:
            model.set_skip(s)
        switch.append((time.perf_counter() - t0) / len(skips))
        t0 = time.perf_counter()
        fresh = ResNetADN(depth=args.depth, skip=skips[r % len(skips)])
        fresh.load_state_dict(state)
        rebuild.append(time.perf_counter() - t0)
    s_med, r_med = statistics.median(switch), statistics.median(rebuild)
    print(f'ResNet-{args.depth}-ADN, torch {torch.__version__}, {args.repeats} repeats')
    print('| operation | median time |')
    print('|---|---|')
    print(f'| set_skip (one switch) | {s_med * 1e6:.1f} us |')
    print(f'| rebuild + load_state_dict | {r_med * 1e3:.1f} ms |')
    print(f'rebuild / switch = {r_med / s_med:,.0f}x')


if __name__ == '__main__':
    main()
