"""Zero-slack instances and the randomised dives of ``skyline`` and ``exact`` (issue 15 item 5)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings

from model_place import place, validate_placement
from model_place.exact import exact_placement, search_available, skyline_dives
from model_place.heuristics import best_heuristic
from model_place.hard_instances import GRAIN, hidden_offsets, zero_slack_instance, zero_slack_rects
from model_place.lifetimes import live_bytes_peak
from model_place.skyline import skyline_placement
from model_place.testing import lifetime_sets
from model_place.validation import arena_of

needs_search = pytest.mark.skipif(not search_available(), reason="compiled search not installed")


@pytest.mark.parametrize("n, seed, pinwheels", [(1, 0, 0), (5, 1, 1), (170, 0, 4), (1000, 3, 8)])
def test_hidden_packing_is_valid_and_zero_slack(n, seed, pinwheels):
    capacity = 1 << 16
    lts = zero_slack_instance(n, seed=seed, capacity=capacity, pinwheels=pinwheels)
    assert len(lts) == n and len({lt.id for lt in lts}) == n
    assert all(lt.size % GRAIN == 0 and lt.size > 0 and lt.start < lt.end for lt in lts)
    validate_placement(lts, hidden_offsets(n, seed=seed, capacity=capacity, pinwheels=pinwheels), capacity)
    assert live_bytes_peak(lts) == capacity
    # the rectangles tile the capacity x horizon rectangle
    assert sum((t1 - t0) * (m1 - m0) for t0, t1, m0, m1 in
               zero_slack_rects(n, seed=seed, capacity=capacity, pinwheels=pinwheels)) == capacity * 2 * n


def test_generator_is_deterministic_and_rejects_impossible_sizes():
    assert zero_slack_instance(50, seed=7) == zero_slack_instance(50, seed=7)
    assert zero_slack_instance(50, seed=7) != zero_slack_instance(50, seed=8)
    with pytest.raises(ValueError):
        zero_slack_instance(10, capacity=64, horizon=2)
    with pytest.raises(ValueError):
        zero_slack_instance(10, capacity=100)


@needs_search
@settings(max_examples=100, deadline=None)
@given(lifetime_sets(max_size=12, alignments=(1, 4, 16)))
def test_dives_are_valid_within_the_bounds_and_never_worse_than_the_heuristics(lts):
    warm = arena_of(lts, best_heuristic(lts))
    arena, offsets, dives, _ = skyline_dives(lts, cutoff=warm + 1, time_limit=None, max_dives=20, seed=3)
    if offsets is None:  # no dive got below the cutoff (a dive may do worse than best-fit)
        assert arena == warm + 1 and dives == 20
    else:
        validate_placement(lts, offsets, arena)
        assert arena == arena_of(lts, offsets) and live_bytes_peak(lts) <= arena <= warm
    r = skyline_placement(lts, time_limit=0.02)
    assert live_bytes_peak(lts) <= r.arena_bytes <= warm and r.lower_bound_bytes == live_bytes_peak(lts)


@needs_search
def test_dives_are_deterministic_and_stop_at_the_goal_and_below_the_cutoff():
    lts = zero_slack_instance(120, seed=4)
    once = skyline_dives(lts, cutoff=1 << 30, time_limit=None, max_dives=30, seed=9)
    assert once == skyline_dives(lts, cutoff=1 << 30, time_limit=None, max_dives=30, seed=9)
    assert once[2] == 30
    # a goal at or above what one dive reaches stops after that dive
    assert skyline_dives(lts, cutoff=1 << 30, goal=(1 << 30) - 1, time_limit=None, seed=9)[2] == 1
    # nothing below an impossible cutoff: no offsets, the cutoff comes back
    assert skyline_dives(lts, cutoff=1 << 20, time_limit=None, max_dives=30) == (1 << 20, None, 30, False)


@needs_search
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dives_close_small_zero_slack_instances(seed):
    """The exact search's decisions time out on these (docs/benchmarks.md); a few thousand dives tile them."""
    lts = zero_slack_instance(60, seed=seed)
    arena, offsets, dives, _ = skyline_dives(lts, cutoff=1 << 30, goal=1 << 20, time_limit=20, seed=seed)
    validate_placement(lts, offsets, arena)
    assert arena == 1 << 20, (arena, dives)


@needs_search
def test_exact_dives_after_a_timed_out_decision_and_is_never_worse(monkeypatch):
    import model_place.exact as exact

    monkeypatch.setattr(exact, "merge_lifetimes", lambda lifetimes, **rules: None)  # the merged instance closes this one
    lts = zero_slack_instance(400, seed=1)
    warm = arena_of(lts, best_heuristic(lts))
    t = time.perf_counter()
    r = exact_placement(lts, time_limit=4.0)
    assert time.perf_counter() - t < 5
    assert r.details["dives"] > 0 and r.arena_bytes < warm
    validate_placement(lts, r.offsets, r.arena_bytes)
    # with a capacity the dives aim at it: the hidden packing's, reached or reported over capacity
    d = exact_placement(lts, capacity=int(1.3 * (1 << 20)), time_limit=4.0)
    assert d.status == "feasible" and d.arena_bytes <= 1.3 * (1 << 20)


@needs_search
def test_skyline_through_place():
    lts = zero_slack_instance(20, seed=2, capacity=1 << 12)
    r = place(lts, method="skyline", time_limit=2)
    assert r.method == "skyline" and r.arena_bytes == r.lower_bound_bytes == 1 << 12 and r.status == "optimal"
    assert place(lts, method="skyline", capacity=1 << 13, time_limit=2).status in ("optimal", "feasible")
