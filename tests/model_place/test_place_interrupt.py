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
