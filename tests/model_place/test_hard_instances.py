"""Zero-slack instances and the anytime placer ``exact-restarts`` (issue 15 item 5)."""

from __future__ import annotations

import time

import pytest

from model_place import place, validate_placement
from model_place.exact import search_available
from model_place.heuristics import best_heuristic
from model_place.hard_instances import GRAIN, hidden_offsets, zero_slack_instance, zero_slack_rects
from model_place.lifetimes import live_bytes_peak
from model_place.restarts import restarts_placement
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
def test_restarts_valid_never_worse_and_within_limit():
    lts = zero_slack_instance(170, seed=0)
    warm = arena_of(lts, best_heuristic(lts))
    t = time.perf_counter()
    r = restarts_placement(lts, time_limit=2.0)
    assert time.perf_counter() - t < 2.5
    validate_placement(lts, r.offsets, r.arena_bytes)
    # never worse than the exact search it starts from, nor than the heuristics that start that
    assert r.arena_bytes <= r.details["exact_arena_bytes"] <= warm
    assert r.lower_bound_bytes <= 1 << 20 <= r.arena_bytes


@needs_search
def test_restarts_through_place_and_capacity():
    lts = zero_slack_instance(20, seed=2, capacity=1 << 12)
    r = place(lts, method="exact-restarts", time_limit=2)
    assert r.method == "exact-restarts" and r.arena_bytes >= 1 << 12
    d = place(lts, method="exact-restarts", capacity=1 << 12, time_limit=2)
    assert d.status in ("optimal", "feasible", "over_capacity")
    assert place(lts, method="exact-restarts", capacity=(1 << 12) - 64, time_limit=2).status == "infeasible"
