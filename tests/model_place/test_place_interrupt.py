"""Ctrl-C during the exact placement search: the search is cancelled and its answer
returned (status ``interrupted``, best placement kept), never a crash."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from model_place import exact


class SlowSearch:
    """Stands in for the compiled search: it reads the cancel generation when it starts
    (a little late, as a thread does) and runs until that generation changes."""

    def __init__(self):
        self.generation = 0

    def solve(self, *args):
        time.sleep(0.3)  # Ctrl-C arrives before the search has started
        mine = self.generation
        deadline = time.monotonic() + 5
        while self.generation == mine and time.monotonic() < deadline:
            time.sleep(0.01)
        return ("interrupted" if self.generation != mine else "ran to its end", None, {})

    def cancel(self):
        self.generation += 1


def test_ctrl_c_before_the_search_starts_still_cancels_it(monkeypatch):
    monkeypatch.setattr(exact, "_search", SlowSearch())
    timer = threading.Timer(0.1, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        status, _, _ = exact.run_search()
    finally:
        timer.cancel()
    assert status == "interrupted" and time.monotonic() - t0 < 2


def test_an_error_of_the_search_reaches_the_caller(monkeypatch):
    class Broken(SlowSearch):
        def solve(self, *args):
            raise MemoryError("no room for the search")

    monkeypatch.setattr(exact, "_search", Broken())
    with pytest.raises(MemoryError, match="no room"):
        exact.run_search()


def test_the_warm_start_stops_at_its_deadline_with_a_valid_placement():
    """On very large inputs the heuristic passes take minutes: past the deadline the warm
    start returns the best finished pass, or the caching allocator's O(n log n) placement."""
    import random

    from model_ir import Lifetime
    from model_place import validate_placement
    from model_place.heuristics import best_fit, best_heuristic, greedy_by_size
    from model_place.validation import arena_of

    r = random.Random(0)
    lts = []
    for i in range(2000):
        start = r.randrange(0, 2000)
        lts.append(Lifetime(f"b{i}", start, start + r.randrange(1, 50), r.randrange(1, 64) * 512))
    t0 = time.perf_counter()
    rushed = best_heuristic(lts, deadline=t0)  # already past: no pass can finish
    assert time.perf_counter() - t0 < 1
    validate_placement(lts, rushed, arena_of(lts, rushed))
    full = best_heuristic(lts)
    assert arena_of(lts, full) == min(arena_of(lts, greedy_by_size(lts)), arena_of(lts, best_fit(lts)))


@pytest.mark.parametrize("seed", range(30))
def test_validation_agrees_with_checking_every_pair(seed):
    """The O(n log n) sweep of validate_placement finds an overlap exactly when some pair
    of buffers alive together overlaps in memory."""
    import random

    from model_ir import Lifetime
    from model_place import PlacementError, validate_placement

    r = random.Random(seed)
    lts = [Lifetime(f"b{i}", (s := r.randrange(0, 20)), s + r.randrange(1, 8), r.randrange(0, 5) * 8)
           for i in range(r.randrange(1, 25))]
    offsets = {lt.id: r.randrange(0, 12) * 8 for lt in lts}
    clash = any(a.start < b.end and b.start < a.end and a.size and b.size
                and offsets[a.id] < offsets[b.id] + b.size and offsets[b.id] < offsets[a.id] + a.size
                for i, a in enumerate(lts) for b in lts[i + 1:])
    arena = max(offsets[lt.id] + lt.size for lt in lts)
    if clash:
        with pytest.raises(PlacementError, match="overlap in memory"):
            validate_placement(lts, offsets, arena)
    else:
        validate_placement(lts, offsets, arena)


def test_the_place_command_says_when_ctrl_c_ended_the_search(capsys):
    """As schedule prints '(interrupted: best so far)': a placement Ctrl-C cut short is
    not reported as a search that ran to its time limit."""
    from model_place.cli_place import PlaceCommand
    from model_place.result import PlacementResult

    def report(details):
        result = PlacementResult({"a": 0}, 512, 512, "found", 0.5, "exact", details=details)
        PlaceCommand._report(result, 1, "out.csv")
        return capsys.readouterr().out

    assert "status found (interrupted: best so far)" in report({"stopped": "interrupted"})
    assert "interrupted" not in report({"stopped": "timeout"})
