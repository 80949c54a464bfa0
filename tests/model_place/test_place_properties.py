"""Property tests: every placer returns a valid placement; the exact method is
optimal (checked by brute force) and never worse than any heuristic."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from model_ir import Lifetime

from model_place import live_bytes_peak, place, placer_names, validate_placement
from model_place.testing import brute_force_arena, lifetime_sets

HEURISTICS = ["none", "greedy-size", "best-fit", "caching-allocator"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_builtin_placers_are_registered():
    assert set(HEURISTICS) | {"exact", "auto"} <= set(placer_names())


@FAST
@given(lifetime_sets(max_size=10, alignments=(1, 2, 4, 8)), st.sampled_from(HEURISTICS[:3] + ["exact"]))
def test_every_placer_is_valid_and_above_the_bound(lts, method):
    r = place(lts, method=method)
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.arena_bytes >= r.lower_bound_bytes >= live_bytes_peak(lts)
    assert r.optimal == (r.arena_bytes == r.lower_bound_bytes)
    assert r.status in ("optimal", "feasible")


@FAST
@given(lifetime_sets(max_size=10))
def test_caching_allocator_is_valid(lts):
    r = place(lts, method="caching-allocator")
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.arena_bytes % (2 << 20) == 0
    assert r.arena_bytes >= live_bytes_peak(lts)


@FAST
@given(lifetime_sets(max_size=6, max_bytes=12, alignments=(1, 1, 2, 4)))
def test_exact_matches_brute_force(lts):
    r = place(lts, method="exact")
    assert r.optimal
    assert r.arena_bytes == brute_force_arena(lts)


@FAST
@given(lifetime_sets(min_size=1, max_size=14, max_time=10))
def test_exact_never_worse_than_heuristics(lts):
    exact = place(lts, method="auto")
    for h in HEURISTICS:
        assert exact.arena_bytes <= place(lts, method=h).arena_bytes
    assert exact.lower_bound_bytes <= exact.arena_bytes


@FAST
@given(lifetime_sets(min_size=1, max_size=6, max_bytes=12, alignments=(1, 2)))
def test_decision_mode_agrees_with_the_optimum(lts):
    best = brute_force_arena(lts)
    yes = place(lts, method="exact", capacity=best)
    assert yes.fits and yes.status in ("optimal", "feasible")
    assert yes.arena_bytes <= best
    if best > 0:
        no = place(lts, method="exact", capacity=best - 1)
        assert no.status == "infeasible"
        assert no.lower_bound_bytes == best
        assert not no.fits
        validate_placement(lts, no.offsets, no.arena_bytes)


@pytest.mark.parametrize("method", ["none", "greedy-size", "best-fit", "caching-allocator", "exact"])
def test_empty_and_zero_sized(method):
    assert place([], method=method).arena_bytes == 0
    lts = [Lifetime("z", 0, 3, 0), Lifetime("a", 0, 2, 7)]
    r = place(lts, method=method)
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.offsets["z"] == 0


SEARCHES = ["auto", "exact", "skyline"] + (["cpsat"] if importlib.util.find_spec("ortools") else [])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifetime_sets(min_size=1, max_size=12, alignments=(1, 2, 4, 8)), st.sampled_from(SEARCHES))
def test_every_search_through_place_is_valid_bounded_and_never_worse_than_the_heuristics(lts, method):
    """auto, skyline and cpsat through place() (before: auto's and skyline's answers were
    not validated there, and never-worse was checked without alignments)."""
    r = place(lts, method=method, time_limit=1)
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.arena_bytes >= r.lower_bound_bytes >= live_bytes_peak(lts)
    assert r.optimal == (r.arena_bytes == r.lower_bound_bytes)
    assert r.arena_bytes <= min(place(lts, method=h).arena_bytes for h in HEURISTICS[:3]), method


@FAST
@given(lifetime_sets(min_size=1, max_size=6, max_bytes=12, alignments=(1, 2, 4)),
       st.sampled_from([m for m in SEARCHES if m != "exact"]))
# No reuse (4 bytes) beats greedy-size and best-fit (5: the 1-byte buffer aligned to 2 after
# the 3-byte one), and skyline's dives missed it (CI found it): no reuse is a warm start now.
@example(lts=(Lifetime("b0", 0, 1, 1, alignment=2), Lifetime("b1", 0, 2, 3)), method="skyline")
def test_decision_mode_of_every_search_fits_the_optimum_and_any_heuristic_arena(lts, method):
    best = brute_force_arena(lts)
    heuristic = min(place(lts, method=h).arena_bytes for h in HEURISTICS[:3])
    for capacity in [heuristic] if method == "skyline" else [best, heuristic]:  # skyline is a heuristic
        r = place(lts, method=method, capacity=capacity, time_limit=5)
        validate_placement(lts, r.offsets, r.arena_bytes)
        assert r.fits and r.arena_bytes <= capacity, (method, capacity, r.status)
    if method != "skyline" and best > 0:
        r = place(lts, method=method, capacity=best - 1, time_limit=5)
        assert r.status == "infeasible" and not r.fits and r.lower_bound_bytes >= live_bytes_peak(lts)
