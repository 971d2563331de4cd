"""The background load of benchmarks/bench_controller.py: busy while it runs, killed on
exit, and bounded in time even if nobody kills it."""
import time

import bench_controller


def _cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


def test_background_load_is_busy_then_killed():
    with bench_controller.background_load(1, None, max_seconds=60) as procs:
        # it computes, it does not sleep: CPU time grows (slowly on a busy machine)
        start = time.monotonic()
        while _cpu_seconds(procs[0].pid) < 0.5 and time.monotonic() - start < 30:
            time.sleep(0.2)
        assert procs[0].poll() is None
        assert _cpu_seconds(procs[0].pid) >= 0.5
    assert procs[0].poll() is not None  # killed on leaving the block, long before 60 s


def test_background_load_ends_by_itself_at_its_deadline():
    start = time.monotonic()
    with bench_controller.background_load(1, None, max_seconds=0.5) as procs:
        assert procs[0].wait(timeout=20) == 0
    assert time.monotonic() - start < 20
