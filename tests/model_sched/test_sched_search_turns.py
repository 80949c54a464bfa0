"""The exact search stopped at deadlines and resumed (``auto``'s turns) ends where one run does."""

import time

from model_ir.simulator import validate_order
from model_sched import greedy
from model_sched.liveness import liveness, peak
from model_sched.search import SearchRun, exact_search

from .conftest import layered_graph


def test_search_resumed_in_short_turns_proves_the_same_optimum():
    g = layered_graph(60, width=8, seed=0)
    lv = liveness(g)
    whole = exact_search(lv)
    assert whole.complete
    h = peak(lv, greedy.bfs_order(lv))
    search, turns = SearchRun(lv), 0
    while True:
        # an incumbent from elsewhere arrives after a few turns, as windows would give it
        out = search.run(time.perf_counter() + 0.005, upper=h if turns == 3 else None)
        turns += 1
        assert out.bound <= whole.peak
        if out.complete:
            break
    assert turns > 4
    best = out.peak if out.order is not None and out.peak <= h else h
    assert out.bound == best == whole.peak
    if out.order is not None:
        validate_order(g, out.order)
        assert peak(lv, out.order) == out.peak
    assert search.run(None).complete  # a finished search stays finished
