"""Does adaptivity cost anything at run time? ResNet-50-ADN against plain ResNets.

Four classifiers (backbone + global pooling + 1000-class head), timed interleaved in one run
(A B C D A B C D ..., rotating order, medians):

- ADN at FFFF (super-net)   vs  plain ResNet-50                         goal: ratio <= 1.01
- ADN at TTTT (base-net)    vs  plain ResNet with blocks (2, 2, 3, 2)    goal: ratio <= 1.03

and the base-net's latency cut next to its GFLOPs cut (the paper: 36.2% against 37.3%,
0.97, on an RTX 3090 at batch 64).

    python benchmarks/bench_subnet_latency.py [--batch-size 8] [--size 224] [--repeats 40]
        [--device cpu|cuda] [--threads N]
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmpretrain.registry import MODELS  # noqa: E402

import mmadn  # noqa: E402,F401
from mmadn.analysis import count_flops, measure_latency  # noqa: E402


def classifier(backbone: dict):
    return MODELS.build(
        dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=1000, in_channels=2048))).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=40)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        'ADN FFFF': classifier(dict(type='ResNetADN', depth=50, skip='FFFF')),
        'ResNet-50': classifier(dict(type='StageResNet', depth=50, stage_blocks=(3, 4, 6, 3))),
        'ADN TTTT': classifier(dict(type='ResNetADN', depth=50, skip='TTTT')),
        'ResNet (2,2,3,2)': classifier(dict(type='StageResNet', depth=50,
                                            stage_blocks=(2, 2, 3, 2))),
    }
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=args.device)
    gflops = {}
    for name, model in models.items():
        model.to(args.device)
        gflops[name] = count_flops(model, x[:1], lambda t, m=model: m(t, mode='tensor')) / 1e9
    fns = {name: (lambda m=model: m(x, mode='tensor')) for name, model in models.items()}
    print(
        f'{len(models)} classifiers, batch {args.batch_size} x {args.size} px on '
        f'{args.device} ({torch.get_num_threads()} threads), {args.repeats} interleaved '
        'rounds', flush=True)
    t = measure_latency(fns, warmup=args.warmup, repeats=args.repeats, progress=True)
    print(f'\n{"model":<18} {"GFLOPs":>7} {"median ms":>10} {"p25":>8} {"p75":>8}')
    for name in models:
        r = t[name]
        print(f'{name:<18} {gflops[name]:7.3f} {r["median_ms"]:10.2f} {r["p25_ms"]:8.2f} '
              f'{r["p75_ms"]:8.2f}')
    med = {n: t[n]['median_ms'] for n in models}
    r_super = med['ADN FFFF'] / med['ResNet-50']
    r_base = med['ADN TTTT'] / med['ResNet (2,2,3,2)']
    g = gflops['ADN TTTT'] / gflops['ADN FFFF']
    lat = med['ADN TTTT'] / med['ADN FFFF']
    print(f'\nADN FFFF / ResNet-50          : {r_super:.3f}  (goal <= 1.01) '
          f'{"ok" if r_super <= 1.01 else "MISSED"}')
    print(f'ADN TTTT / ResNet (2,2,3,2)   : {r_base:.3f}  (goal <= 1.03) '
          f'{"ok" if r_base <= 1.03 else "MISSED"}')
    print(f'ADN TTTT / FFFF               : GFLOPs x{g:.3f} (cut {100 * (1 - g):.1f}%), '
          f'latency x{lat:.3f} (cut {100 * (1 - lat):.1f}%); latency cut / GFLOPs cut = '
          f'{(1 - lat) / (1 - g):.2f} (paper: 36.2% / 37.3% = 0.97, GPU)')


if __name__ == '__main__':
    main()
