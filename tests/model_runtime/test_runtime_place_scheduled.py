"""place_scheduled: the plan keeps the scheduled order unless another order of the same
peak packs into a smaller arena (the fallback that bench and optimize() share)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import attrs

from model_ir import simulate
from model_ir.graph import Buffer, Graph, Op
from model_runtime.planning import FIRST_PLACEMENT_SHARE, place_scheduled
from model_sched import schedule


def two_chains() -> Graph:
    """Two independent chains of equal sizes: running either first gives the same peak."""
    buffers = [Buffer("w", 8, persistent=True), Buffer("out", 4, output=True)]
    ops = []
    for c in "ab":
        buffers += [Buffer(f"{c}1", 100), Buffer(f"{c}2", 60), Buffer(f"{c}3", 10)]
        ops += [Op(f"{c}f", inputs=["w"], outputs=[f"{c}1"]),
                Op(f"{c}g", inputs=[f"{c}1"], outputs=[f"{c}2"]),
                Op(f"{c}h", inputs=[f"{c}2"], outputs=[f"{c}3"])]
    ops.append(Op("join", inputs=["a3", "b3"], outputs=["out"]))
    return Graph(buffers, ops, name="two-chains")


def scheduled_elsewhere(graph: Graph):
    """An exact schedule whose order differs from the one lns returns, at the same peak."""
    lns_order = schedule(graph, method="lns", time_limit=1.0).order
    sched = schedule(graph, method="search", time_limit=5.0)
    first = lns_order[0][0]  # which chain lns runs first; the other order runs the other chain first
    other = [o for o in lns_order if o[0] != first and o != "join"] + \
            [o for o in lns_order if o[0] == first] + ["join"]
    assert simulate(graph, other).peak_bytes == sched.peak_bytes
    return attrs.evolve(sched, order=other)


class Placer:
    """Records each call; the arena it returns for each order is set by the test."""

    def __init__(self, arena_of_first: int, arena_of_other: int, bound: int):
        self.calls = []
        self.arenas = [arena_of_first, arena_of_other]
        self.bound = bound

    def __call__(self, order, seconds):
        arena = self.arenas[min(len(self.calls), 1)]
        self.calls.append((tuple(order), seconds))
        return SimpleNamespace(arena_bytes=arena, optimal=arena == self.bound)


def test_another_order_of_the_same_peak_is_kept_when_it_packs_smaller():
    graph = two_chains()
    sched = scheduled_elsewhere(graph)
    placer = Placer(arena_of_first=300, arena_of_other=200, bound=200)
    order, placement = place_scheduled(graph, sched, placer, 10.0)
    assert placement.arena_bytes == 200
    assert order != tuple(sched.order) and order == placer.calls[1][0]
    assert placer.calls[0] == (tuple(sched.order), 10.0 * FIRST_PLACEMENT_SHARE)
    assert simulate(graph, list(order)).peak_bytes == sched.peak_bytes


def test_the_scheduled_order_stays_when_the_other_packs_no_smaller():
    graph = two_chains()
    sched = scheduled_elsewhere(graph)
    placer = Placer(arena_of_first=300, arena_of_other=300, bound=200)
    order, placement = place_scheduled(graph, sched, placer, 10.0)
    assert order == tuple(sched.order) and placement.arena_bytes == 300 and len(placer.calls) == 2


def test_an_order_that_packs_at_its_bound_is_placed_once():
    graph = two_chains()
    sched = scheduled_elsewhere(graph)
    placer = Placer(arena_of_first=200, arena_of_other=100, bound=200)
    order, _ = place_scheduled(graph, sched, placer, 10.0)
    assert order == tuple(sched.order) and len(placer.calls) == 1


def test_lns_schedules_and_budgets_get_the_whole_time():
    graph = two_chains()
    for sched in (schedule(graph, method="lns", time_limit=1.0),
                  attrs.evolve(scheduled_elsewhere(graph), memory_budget=10**6)):
        placer = Placer(arena_of_first=300, arena_of_other=100, bound=200)
        order, _ = place_scheduled(graph, sched, placer, 10.0)
        assert order == tuple(sched.order) and placer.calls == [(tuple(sched.order), 10.0)]


def test_a_search_for_the_other_order_that_overruns_leaves_a_positive_limit(monkeypatch):
    """On a slow machine the search for the other order can take longer than the whole
    placement time (a CI run: 'time limit must be >= 0 seconds, got -0.48'): each
    placement still gets MIN_PLACEMENT_SECONDS."""
    from model_runtime import planning

    graph = two_chains()
    sched = scheduled_elsewhere(graph)
    clock = itertools.count(0.0, 5.0)  # every reading 5 s later: the search overran a 0.2 s limit
    monkeypatch.setattr(planning.time, "perf_counter", lambda: next(clock))
    placer = Placer(arena_of_first=300, arena_of_other=200, bound=200)
    place_scheduled(graph, sched, placer, 0.2)
    assert [seconds for _, seconds in placer.calls] == [0.2 * FIRST_PLACEMENT_SHARE, planning.MIN_PLACEMENT_SECONDS]
    same_order = Placer(arena_of_first=300, arena_of_other=200, bound=200)  # lns finds the scheduled order
    place_scheduled(graph, attrs.evolve(sched, order=schedule(graph, method="lns", time_limit=1.0).order),
                    same_order, 0.2)
    assert [seconds for _, seconds in same_order.calls] == [planning.MIN_PLACEMENT_SECONDS]
