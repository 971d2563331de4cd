import os.path as osp
import sys

# the benchmark scripts live in benchmarks/ (scripts, not a package): import them by path
BENCHMARKS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'benchmarks')
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
