"""place(), validation, lifetimes from graphs, and placer lookup by name."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from model_ir import Lifetime, PluginError, simulate
from model_ir.errors import PluginFailedError
from model_ir.testing.strategies import graphs

from model_place import (LifetimeError, PlaceError, PlacementError, check_lifetimes, lifetimes_from_graph,
                         live_bytes_peak, place, validate_placement)

L = [Lifetime("a", 0, 2, 8), Lifetime("b", 1, 3, 8), Lifetime("c", 2, 4, 8)]


def test_validate_accepts_touching_and_disjoint_in_time():
    validate_placement(L, {"a": 0, "b": 8, "c": 0}, 16)


@pytest.mark.parametrize("offsets,arena,message", [
    ({"a": 0, "b": 4, "c": 0}, 16, "'a' and 'b' are alive together"),
    ({"a": 0, "b": 8, "c": 8}, 16, "'b' and 'c' are alive together"),
    ({"a": 0, "b": 8, "c": 0}, 15, "does not fit the arena of 15 bytes"),
    ({"a": 0, "b": 8}, 16, "'c' has no offset"),
    ({"a": 0, "b": 8, "c": 0, "d": 0}, 16, "unknown buffer 'd'"),
    ({"a": -8, "b": 8, "c": 0}, 16, "non-negative"),
])
def test_validate_rejects(offsets, arena, message):
    with pytest.raises(PlacementError, match=message):
        validate_placement(L, offsets, arena)


def test_validate_checks_alignment():
    lts = [Lifetime("a", 0, 1, 3, alignment=4)]
    validate_placement(lts, {"a": 4}, 8)
    with pytest.raises(PlacementError, match="multiple of its alignment 4"):
        validate_placement(lts, {"a": 2}, 8)


def test_lower_bound_is_the_peak_of_live_bytes():
    assert live_bytes_peak(L) == 16
    assert live_bytes_peak([Lifetime("a", 0, 1, 5), Lifetime("b", 1, 2, 7)]) == 7


def test_alignment_can_force_fragmentation():
    # 3 bytes then a 4-aligned buffer: the bound (3 + 4) is not reachable.
    lts = [Lifetime("a", 0, 2, 3), Lifetime("b", 0, 2, 4, alignment=4)]
    r = place(lts)
    assert r.arena_bytes == 7 and r.optimal and r.offsets == {"b": 0, "a": 4}
    lts = [Lifetime("a", 0, 2, 3, alignment=2), Lifetime("b", 0, 2, 3, alignment=4)]
    r = place(lts)
    assert r.arena_bytes == 7 and r.lower_bound_bytes == 7  # raised from 6 by the search
    assert r.details["decisions"] == 1


def test_minimisation_raises_the_bound_when_zero_fragmentation_is_impossible():
    # Classic: a and c are alive at different times, b overlaps both, and d must
    # sit over both a and c; the bound 12 is not achievable, 16 is optimal.
    lts = [Lifetime("a", 0, 2, 4), Lifetime("b", 1, 3, 8), Lifetime("c", 2, 4, 4), Lifetime("x", 0, 1, 8),
           Lifetime("y", 3, 4, 8)]
    from model_place.testing import brute_force_arena

    best = brute_force_arena(lts)
    r = place(lts)
    assert r.arena_bytes == best and r.optimal
    assert r.lower_bound_bytes == best >= live_bytes_peak(lts)


@pytest.mark.parametrize("bad,message", [
    ([Lifetime("a", 0, 1, 1), Lifetime("a", 1, 2, 1)], "duplicate buffer id 'a'"),
    ([Lifetime("a", 2, 2, 1)], "is empty"),
    ([Lifetime("a", 0, 1, -1)], "size must be >= 0"),
    ([Lifetime("a", 0, 1, 1, alignment=0)], "alignment must be >= 1"),
])
def test_bad_lifetimes(bad, message):
    with pytest.raises(LifetimeError, match=message):
        check_lifetimes(bad)
    with pytest.raises(LifetimeError):
        place(bad)


def test_unknown_method_and_bad_arguments():
    with pytest.raises(PluginError, match="unknown placer 'nope'; available: auto, best-fit"):
        place(L, method="nope")
    with pytest.raises(PlaceError, match="capacity"):
        place(L, capacity=-1)
    with pytest.raises(PlaceError, match="time limit"):
        place(L, time_limit=-1)


def test_caching_allocator_refuses_alignment_it_does_not_give():
    with pytest.raises(PlaceError, match="512 bytes"):
        place([Lifetime("a", 0, 1, 8, alignment=4096)], method="caching-allocator")


def test_result_figures():
    r = place(L, method="none")
    assert (r.arena_bytes, r.lower_bound_bytes, r.status, r.optimal) == (24, 16, "feasible", False)
    assert r.gap == pytest.approx((24 - 16) / 24)
    assert r.placement().arena_bytes == 24
    e = place(L)
    assert (e.arena_bytes, e.status, e.gap, e.method) == (16, "optimal", 0.0, "exact")


def test_heuristic_with_capacity_reports_over_capacity_or_infeasible():
    assert place(L, method="none", capacity=16).status == "over_capacity"
    assert place(L, method="none", capacity=15).status == "infeasible"  # below the bound
    assert place(L, method="none", capacity=24).status == "feasible"
    short = place(L, capacity=15)  # the exact placer's arena is the bound, 16 B, above the capacity
    assert (short.status, short.arena_bytes, short.lower_bound_bytes, short.optimal) == ("infeasible", 16, 16, False)


def test_a_placer_without_time_places_no_worse_than_no_reuse():
    """With no time left the exact placer answers with the O(n log n) layout: the caching
    allocator's 512-byte blocks made eight small buffers take 2049 B, five times no reuse."""
    lts = [Lifetime(f"b{i}", i, i + 2, 50 + i) for i in range(8)]
    plain = place(lts, method="none").arena_bytes
    for method in ("exact", "auto"):
        r = place(lts, method=method, time_limit=0)
        assert r.arena_bytes <= plain, method
        assert place(lts, method=method, time_limit=0, capacity=plain).status != "over_capacity"


def test_third_party_placer_is_found_by_name():
    from model_ir.hookspecs import hookimpl
    from model_ir.plugins import plugin_manager

    from model_place.result import make_result

    class Stack:
        name, help = "test-stack", "every buffer on top of the previous one"

        def place(self, lifetimes, *, capacity=None, time_limit=None):
            offs, top = {}, 0
            for lt in lifetimes:
                offs[lt.id], top = top, top + lt.size
            return make_result(lifetimes, offs, method=self.name, seconds=0.0, capacity=capacity)

    class Plugin:
        @hookimpl
        def model_opt_placers(self):
            return [Stack()]

    pm = plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    try:
        assert place(L, method="test-stack").arena_bytes == 24
    finally:
        pm.unregister(plugin)


def test_a_wrong_third_party_answer_is_caught():
    from model_ir.hookspecs import hookimpl
    from model_ir.plugins import plugin_manager

    from model_place.result import PlacementResult

    class Liar:
        name, help = "test-liar", "claims everything fits at 0"

        def place(self, lifetimes, *, capacity=None, time_limit=None):
            return PlacementResult({lt.id: 0 for lt in lifetimes}, 8, 8, "optimal", 0.0, self.name)

    class Plugin:
        @hookimpl
        def model_opt_placers(self):
            return [Liar()]

    pm = plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    try:
        # The message names the plugin; the status is a plugin failure's, not bad input's.
        with pytest.raises(PluginFailedError, match=r"plugin Plugin .* failed: placer 'test-liar' gave an "
                                                    r"invalid answer: .*alive together") as caught:
            place(L, method="test-liar")
        assert caught.value.exit_code == 4
    finally:
        pm.unregister(plugin)


@settings(max_examples=40, deadline=None)
@given(graphs(max_ops=10))
def test_lifetimes_from_graph_match_the_simulator_and_place(g):
    lts = lifetimes_from_graph(g)
    prof = simulate(g)
    assert lts == prof.lifetimes
    assert live_bytes_peak(lts) == prof.transient_peak_bytes
    r = place(lts)
    assert r.optimal or r.lower_bound_bytes > prof.transient_peak_bytes
    aligned = lifetimes_from_graph(g, alignment=16)
    ra = place(aligned, method="best-fit")
    assert all(off % 16 == 0 for off in ra.offsets.values())


def test_progress_reports_each_decision():
    from model_place.exact import SearchProgress

    lts = [Lifetime("a", 0, 2, 3, alignment=2), Lifetime("b", 0, 2, 3, alignment=4)]
    seen: list[SearchProgress] = []
    r = place(lts, progress=seen.append)
    assert [(p.capacity, p.outcome, p.lower_bound_bytes) for p in seen] == [(6, "infeasible", 7)]
    assert r.lower_bound_bytes == 7 and r.seconds < 1
    # heuristics ignore the callback
    place(lts, method="best-fit", progress=seen.append)
    assert len(seen) == 1


def test_grain_of_sizes_and_alignments():
    from model_place.exact import grain

    assert grain([Lifetime("a", 0, 1, 8), Lifetime("b", 0, 1, 12), Lifetime("z", 0, 1, 0)]) == 4
    assert grain([Lifetime("a", 0, 1, 8, alignment=6), Lifetime("b", 0, 1, 12)]) == 2
    assert grain([Lifetime("z", 0, 1, 0)]) == 1


def test_infeasibility_proofs_step_by_the_grain():
    # Two 4-byte buffers aligned to 8 bytes: the best arena is 12 (0 and 8). Every
    # size and alignment is a multiple of 4, so so is every canonical arena:
    # proving 9 bytes impossible also rules out 10 and 11.
    lts = [Lifetime("a", 0, 1, 4, alignment=8), Lifetime("b", 0, 1, 4, alignment=8)]
    r = place(lts, capacity=9)
    assert r.status == "infeasible" and r.lower_bound_bytes == 12
    m = place(lts)
    assert m.arena_bytes == 12 and m.optimal and m.details["decisions"] == 1


def test_exact_search_refuses_figures_beyond_64_bits():
    # the alignment case above, scaled by 2**61: the compiled search works in int64
    k = 1 << 61
    lts = [Lifetime("a", 0, 2, 3 * k, alignment=2 * k), Lifetime("b", 0, 2, 3 * k, alignment=4 * k)]
    with pytest.raises(PlaceError, match="64-bit"):
        place(lts)
    assert place(lts, method="best-fit").arena_bytes == 7 * k  # the heuristics have no such limit
