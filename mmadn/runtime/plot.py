"""A picture of a controlled run: latency per call against the budget, and the depth."""
import os
import os.path as osp
from typing import Mapping, Optional, Sequence, Tuple


def plot_controller_log(log: Sequence[Mapping], path: str, budget_ms: float, levels: Sequence[str],
                        others: Optional[Mapping[str, Sequence[Mapping]]] = None,
                        spans: Sequence[Tuple[float, float,
                                              str]] = (), title: Optional[str] = None) -> None:
    """Write a PNG of two panels sharing the time axis (seconds since the first call):
    the latency of each call with the budget as a dashed line, and the sub-network each
    call ran (the front's levels from the cheapest up).

    Args:
        log: the controller's log (``time``, ``latency_ms``, ``skip`` per call).
        path: the PNG to write.
        budget_ms: the budget line.
        levels: the controller's front, cheapest first (the depth panel's ticks).
        others: label -> a log of the same form, drawn in the latency panel beside the
            controller (e.g. fixed depths run on the same stream).
        spans: ``(start, end, label)`` in the logs' clock seconds, shaded in both panels
            (e.g. when a background load ran).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not log:
        raise ValueError('the log holds no call')
    series = dict(others or {})
    t0 = min(min(c['time'] for c in s) for s in [log, *series.values()] if s)
    fig, (ax_lat, ax_depth) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.2),
                                           gridspec_kw=dict(height_ratios=[2, 1]))
    for i, (start, end, label) in enumerate(spans):
        for ax in (ax_lat, ax_depth):
            ax.axvspan(start - t0, end - t0, color='tab:orange', alpha=0.15,
                       label=label if ax is ax_lat and i == 0 else None)
    for name, calls in series.items():
        ax_lat.plot([c['time'] - t0 for c in calls], [c['latency_ms'] for c in calls], '.',
                    markersize=3, alpha=0.7, label=name)
    ax_lat.plot([c['time'] - t0 for c in log], [c['latency_ms'] for c in log], '.-', markersize=3,
                linewidth=0.8, color='tab:red', label='controller')
    ax_lat.axhline(budget_ms, color='black', linestyle='--', linewidth=1,
                   label=f'budget {budget_ms:.0f} ms')
    ax_lat.set_ylabel('latency per call (ms)')
    ax_lat.grid(alpha=0.3)
    ax_lat.legend(fontsize=7, loc='upper left')
    index = {s: i for i, s in enumerate(levels)}
    known = [c for c in log if c['skip'] in index]
    ax_depth.step([c['time'] - t0 for c in known], [index[c['skip']] for c in known], where='post',
                  color='tab:red')
    ax_depth.set_yticks(range(len(levels)))
    ax_depth.set_yticklabels(levels, fontsize=7)
    ax_depth.set_ylabel('sub-network')
    ax_depth.set_xlabel('time (s)')
    ax_depth.grid(alpha=0.3)
    if title:
        ax_lat.set_title(title, fontsize=9)
    fig.tight_layout()
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
