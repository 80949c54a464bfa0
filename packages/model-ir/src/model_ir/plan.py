"""Schedules, placements and plans: the answers the optimizers produce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from model_ir.errors import ScheduleError
from model_ir.graph import Graph


@attrs.frozen
class Schedule:
    """An order of all op ids of a graph."""

    order: tuple[str, ...] = attrs.field(converter=tuple)


@attrs.frozen
class Placement:
    """A byte offset for every placed buffer inside one arena of ``arena_bytes``."""

    offsets: Mapping[str, int] = attrs.field(hash=False)
    arena_bytes: int


@attrs.frozen
class Plan:
    """A graph with the order and placement chosen for it, and the figures measured.

    ``figures`` holds numbers such as ``peak_bytes``, ``eager_peak_bytes``,
    ``lower_bound_bytes``, ``arena_bytes``, solver seconds and gaps.
    """

    graph: Graph
    schedule: Schedule
    placement: Placement | None = None
    figures: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


def program_order(graph: Graph) -> Schedule:
    """The eager order: ops as listed in the graph."""
    return Schedule(tuple(op.id for op in graph.ops))


def order_indices(graph: Graph, order: Sequence[str] | Schedule) -> list[int]:
    """Op positions for a sequence of op ids (no validation of the order itself)."""
    from model_ir.arguments import check_ids  # model_ir.arguments imports the graph module

    ids = order.order if isinstance(order, Schedule) else check_ids(order)
    out = []
    for op_id in ids:
        try:
            out.append(graph.op_index[op_id])
        except KeyError:
            raise ScheduleError(f"schedule names unknown op {op_id!r}") from None
    return out
