"""Time limits, Ctrl-C and scale: the best order so far always comes back, quickly."""

import time

from model_ir.simulator import simulate
from model_sched import schedule

from .conftest import layered_graph


def test_keyboard_interrupt_returns_best_so_far():
    g = layered_graph(300, width=12, seed=2)
    seen = []

    def progress(event):
        seen.append(event)
        if event.stage not in ("program", "forced-liveness bound") and len(seen) >= 3:
            raise KeyboardInterrupt

    r = schedule(g, method="auto", time_limit=30, progress=progress)
    assert r.interrupted
    assert r.peak_bytes == simulate(g, r.order).peak_bytes
    assert r.peak_bytes <= min(e.best_peak_bytes for e in seen)
    assert r.seconds < 10


def test_ten_thousand_ops_auto_respects_a_short_time_limit():
    from model_sched import scheduler_names

    scheduler_names()  # load the plugins first: other layers' plugins may import torch
    g = layered_graph(10_000, width=16, seed=0)
    t = time.perf_counter()
    r = schedule(g, method="auto", time_limit=3)
    wall = time.perf_counter() - t
    # the limit covers the solve; building indices, bounds and baselines is near-linear
    assert r.seconds < 3 + 4 and wall < 3 + 8, (r.seconds, wall)
    assert r.peak_bytes == simulate(g, r.order).peak_bytes
    assert r.peak_bytes <= r.eager_peak_bytes
    assert r.lower_bound_bytes <= r.peak_bytes
