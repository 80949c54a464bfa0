"""The optional CP-SAT placer agrees with the brute-force optimum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from model_place import place, validate_placement
from model_place.lifetimes import live_bytes_peak
from model_place.testing import brute_force_arena, lifetime_sets

pytest.importorskip("ortools")


@settings(max_examples=25, deadline=None)
@given(lifetime_sets(min_size=1, max_size=5, max_bytes=12, alignments=(1, 2, 4)))
def test_cpsat_is_optimal_and_decides(lts):
    best = brute_force_arena(lts)
    r = place(lts, method="cpsat", time_limit=20)
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert r.arena_bytes == best and r.optimal
    if best:
        short = place(lts, method="cpsat", capacity=best - 1, time_limit=20)
        assert short.status == "infeasible" and not short.optimal
        # A capacity below the live bytes' peak keeps the bound at that peak (it was set to capacity + 1).
        assert short.lower_bound_bytes >= live_bytes_peak(lts)


def test_cpsat_refuses_lifetimes_beyond_64_bit_integers():
    """Alignments the CSV reader accepts (< 2**62 each) whose arena passes 2**63: a clear
    PlaceError, as the exact search gives (before: a TypeError from OR-Tools' Domain)."""
    from model_ir import Lifetime
    from model_place.errors import PlaceError

    lts = [Lifetime(k, 0, 2, 10, 2**62 - 1) for k in "abc"]
    with pytest.raises(PlaceError, match="placer 'cpsat' works in 64-bit integers"):
        place(lts, method="cpsat", time_limit=5)


def test_ctrl_c_stops_cpsat_with_its_best_placement_so_far():
    """Ctrl-C during the CP-SAT search: its best placement, reported as interrupted (before:
    a KeyboardInterrupt out of ``Solve``, or, with CP-SAT's own SIGINT handler, a stop
    reported as if the time limit had run out)."""
    import _thread
    import threading
    import time

    from model_place.hard_instances import zero_slack_instance

    lts = zero_slack_instance(150, seed=1)  # CP-SAT does not close it within the limit
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        r = place(lts, method="cpsat", time_limit=60)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 20 and r.details["stopped"] == "interrupted"
    validate_placement(lts, r.offsets, r.arena_bytes)
    assert not r.optimal and r.lower_bound_bytes <= r.arena_bytes
