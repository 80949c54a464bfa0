"""The answer of a scheduler: an order with its peak, bound and gap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class ScheduleResult:
    """An order of op ids and its figures (bytes include persistent buffers; seconds wall clock).

    ``eager_peak_bytes``: program order freed as eager PyTorch frees (the simulator's
    ``eager=True``, as model-bench's eager baseline).
    ``optimal`` is claimed only when ``peak_bytes == lower_bound_bytes``. ``gap`` is
    ``(peak - bound) / peak``. ``source`` names the algorithm that found the order;
    ``candidates`` maps each algorithm tried to the best peak it reached.

    With a ``memory_budget``, the order may list ops again (recomputations:
    ``recomputed_ops`` of them, ``recompute_flops`` in all), ``lower_bound_bytes`` is
    the least any plan with recomputation can peak at, and
    ``reorder_lower_bound_bytes`` the least any order without recomputation can:
    a budget under the latter proves that recomputation is needed.
    ``recompute_flops_lower_bound``: no plan fitting the budget recomputes fewer FLOPs
    (None when not computed: no fit, or a graph too large for the bound).
    ``no_fit_within_runs``: the exact model proved that no plan running each op at most
    that many times fits the budget (None when nothing was proven); plans running some
    op more often are not ruled out.
    """

    order: tuple[str, ...] = attrs.field(converter=tuple)
    peak_bytes: int
    eager_peak_bytes: int
    lower_bound_bytes: int
    seconds: float
    method: str
    source: str = ""
    candidates: Mapping[str, int] = attrs.field(factory=dict, hash=False)
    interrupted: bool = False
    persistent_bytes: int = 0
    memory_budget: int | None = None
    recompute_flops: int = 0
    recomputed_ops: int = 0
    reorder_lower_bound_bytes: int | None = None
    recompute_flops_lower_bound: int | None = None
    no_fit_within_runs: int | None = None

    @property
    def fits_budget(self) -> bool | None:
        """Whether the peak is at most the memory budget (None without a budget)."""
        return None if self.memory_budget is None else self.peak_bytes <= self.memory_budget

    @property
    def transient_peak_bytes(self) -> int:
        """Peak of non-persistent buffers only (bytes)."""
        return self.peak_bytes - self.persistent_bytes

    @property
    def optimal(self) -> bool:
        return self.peak_bytes == self.lower_bound_bytes

    @property
    def gap(self) -> float:
        """Relative distance to the bound, ``(peak - bound) / peak`` (0.0 when optimal)."""
        if self.peak_bytes <= 0:
            return 0.0
        return (self.peak_bytes - self.lower_bound_bytes) / self.peak_bytes

    @property
    def saving_bytes(self) -> int:
        return self.eager_peak_bytes - self.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the ``--json`` output of ``model-opt schedule``)."""
        return {
            "order": list(self.order),
            "peak_bytes": self.peak_bytes,
            "transient_peak_bytes": self.transient_peak_bytes,
            "persistent_bytes": self.persistent_bytes,
            "eager_peak_bytes": self.eager_peak_bytes,
            "saving_bytes": self.saving_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "gap": self.gap,
            "optimal": self.optimal,
            "seconds": self.seconds,
            "method": self.method,
            "source": self.source,
            "candidates": dict(self.candidates),
            "interrupted": self.interrupted,
            **({"memory_budget": self.memory_budget, "fits_budget": self.fits_budget,
                "recompute_flops": self.recompute_flops, "recomputed_ops": self.recomputed_ops,
                "reorder_lower_bound_bytes": self.reorder_lower_bound_bytes,
                "recompute_flops_lower_bound": self.recompute_flops_lower_bound,
                "no_fit_within_runs": self.no_fit_within_runs}
               if self.memory_budget is not None else {}),
        }
