"""Bookkeeping shared by every scheduler during one solve: the best order found so
far, the best lower bound, the deadline, progress reports and interruption."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import attrs

from model_sched.liveness import Liveness, peak


@attrs.frozen
class Progress:
    """One progress report: ``stage`` names the running step; figures in bytes and seconds."""

    stage: str
    seconds: float
    best_peak_bytes: int
    lower_bound_bytes: int


class SolveControl:
    """Holds the incumbent and the bound; schedulers offer orders and bounds to it.

    ``time_limit`` (seconds, ``None`` for none) is measured from construction.
    The incumbent is kept here rather than in a scheduler so that an interruption
    (Ctrl-C) anywhere still leaves the best order found so far. With a
    ``memory_budget`` (bytes), the best order is one that fits it with the fewest
    recomputed FLOPs (ties: the lower peak), else the one with the lowest peak.
    ``bound`` holds for every answer offered: under a budget, plans that recompute too,
    so a bound proven only for orders without recomputation goes to ``order_bound``
    (:meth:`raise_order_bound`).
    """

    def __init__(self, lv: Liveness, time_limit: float | None = None,
                 progress: Callable[[Progress], None] | None = None, memory_budget: int | None = None):
        self.lv = lv
        self.start = time.perf_counter()
        self.deadline = None if time_limit is None else self.start + max(0.0, time_limit)
        self.progress = progress
        self.best_order: list[int] | None = None
        self.best_peak: int | None = None
        self.best_source = ""
        self.best_flops = 0
        self.memory_budget = memory_budget
        self.bound = 0
        self.order_bound = 0  # the least any order without recomputation peaks at
        self.interrupted = False
        self.sources: dict[str, int] = {}
        #: the exact model proved that no order running each op at most this many times
        #: fits the budget (None: nothing proven)
        self.no_fit_within_runs: int | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    def expired(self) -> bool:
        return self.interrupted or (self.deadline is not None and time.perf_counter() >= self.deadline)

    @property
    def solved(self) -> bool:
        """True once the incumbent's peak equals the bound."""
        return self.best_peak is not None and self.best_peak <= self.bound

    def offer(self, order: Sequence[int], source: str, peak_bytes: int | None = None, flops: int = 0) -> bool:
        """Keep ``order`` if it beats the incumbent; returns whether it did. An order with
        recomputations (an op listed again) comes with its ``peak_bytes`` and the
        ``flops`` its recomputations cost."""
        if peak_bytes is None:
            if len(order) > self.lv.n_ops:
                raise ValueError("an order with recomputations must be offered with its peak_bytes")
            peak_bytes = peak(self.lv, order)
        p = peak_bytes
        prev = self.sources.get(source)
        self.sources[source] = p if prev is None else min(prev, p)
        if self.best_peak is None or self._key(p, flops) < self._key(self.best_peak, self.best_flops):
            self.best_order, self.best_peak, self.best_source = list(order), p, source
            self.best_flops = flops
            self.report(source)
            return True
        return False

    def _key(self, peak_bytes: int, flops: int) -> tuple:
        if self.memory_budget is None:
            return (peak_bytes,)
        fits = peak_bytes <= self.memory_budget
        return (not fits, flops if fits else 0, peak_bytes)

    def raise_bound(self, bound: int, stage: str = "bound") -> None:
        if bound > self.bound:
            self.bound = bound
            self.report(stage)

    def raise_order_bound(self, bound: int, stage: str = "bound") -> None:
        """A bound proven for orders without recomputation: the answer's bound, except
        under a budget, where a plan that recomputes can peak below it."""
        self.order_bound = max(self.order_bound, bound)
        if self.memory_budget is None:
            self.raise_bound(bound, stage)

    def report(self, stage: str) -> None:
        if self.progress is not None and self.best_peak is not None:
            self.progress(Progress(stage, self.elapsed(), self.best_peak, self.bound))
