"""This project's recomputation planner against the anchors users have today
(:mod:`model_bench.recompute_anchors`: torch.compile's activation memory budget and
``torch.utils.checkpoint`` on every block), on the same model and batch.

The anchors measure one real CPU step (forward, loss, backward; gradients left in
``.grad``), and so does the planner's graph (captured the same way: no optimizer,
``keep_grads``). Where an anchor record has its measured peak (live tensor bytes),
the planner gets that very peak as its memory budget: "the same peak memory", and
answers with the FLOPs it recomputes. For records without peaks, the budget is the
planner's no-recomputation peak less the activation bytes the anchor stops saving for
backward (``no_recompute_saved_bytes - saved_activation_bytes``, which lowers a peak
by at most as much). FLOPs of both are ``torch.utils.flop_counter``'s
(matrix products, convolutions, attention; pointwise ops count 0 for both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from model_ir.graph import Graph


def anchor_cut(row: Mapping[str, Any]) -> tuple[int, str]:
    """An anchor's memory cut (bytes) and what it was measured on (``peak`` or ``saved``)."""
    if row.get("peak_bytes") is not None and row.get("no_recompute_peak_bytes") is not None:
        return int(row["no_recompute_peak_bytes"]) - int(row["peak_bytes"]), "peak"
    return int(row["no_recompute_saved_bytes"]) - int(row["saved_activation_bytes"]), "saved"


def matched_budget(row: Mapping[str, Any], no_recompute_peak: int) -> int:
    """The planner's budget at an anchor: its measured peak, else the planner's own
    peak less the anchor's cut of saved activations."""
    if row.get("peak_bytes") is not None:
        return int(row["peak_bytes"])
    return no_recompute_peak - anchor_cut(row)[0]


def planner_point(graph: Graph, budget: int, *, time_limit: float, label: str,
                  no_recompute_peak: int) -> dict[str, Any]:
    """Plan ``graph`` under ``budget`` bytes (``model_sched.schedule``) and report the
    answer: whether it fits, its peak and cut, and the FLOPs it recomputes."""
    from model_sched import schedule

    r = schedule(graph, memory_budget=budget, time_limit=time_limit)
    forward = (graph.meta.get("flops") or {}).get("forward") or 0
    return {
        "method": "model-opt", "matched": label, "memory_budget": budget, "fits": bool(r.fits_budget),
        "peak_bytes": r.peak_bytes, "cut_bytes": no_recompute_peak - r.peak_bytes,
        "recomputed_ops": r.recomputed_ops, "recomputed_flops": r.recompute_flops,
        "recompute_overhead": r.recompute_flops / forward if forward else None,
        "lower_bound_bytes": r.lower_bound_bytes, "recompute_flops_lower_bound": r.recompute_flops_lower_bound,
        "overhead_lower_bound": (r.recompute_flops_lower_bound / forward
                                 if forward and r.recompute_flops_lower_bound is not None else None),
        "seconds": round(r.seconds, 2),
    }


def compare(graph: Graph, anchors: Iterable[Mapping[str, Any]], *, fractions: Sequence[float] = (),
            time_limit: float = 20.0, progress=None) -> list[dict[str, Any]]:
    """For each anchor row of this model (torch.compile budgets, checkpointing), the
    anchor's figures next to the planner's at the same cut; then the planner alone at
    ``fractions`` of its transient peak (for its own curve). ``graph``: the step of the
    same model and batch, captured with FLOPs."""
    from model_sched import schedule

    say = progress or (lambda _msg: None)
    base = schedule(graph, time_limit=time_limit)
    peak = base.peak_bytes
    forward = (graph.meta.get("flops") or {}).get("forward") or 0
    say(f"no recomputation: peak {peak} B (lower bound {base.lower_bound_bytes} B)")
    out: list[dict[str, Any]] = [{
        "method": "model-opt", "matched": "no-recompute", "memory_budget": None, "fits": True,
        "peak_bytes": peak, "cut_bytes": 0, "recomputed_ops": 0, "recomputed_flops": 0, "recompute_overhead": 0.0,
        "lower_bound_bytes": base.lower_bound_bytes, "seconds": round(base.seconds, 2)}]
    for row in anchors:
        if row["method"] == "no-recompute":
            continue
        label = row["method"] + ("" if row.get("budget") is None else f" {row['budget']:g}")
        cut, basis = anchor_cut(row)
        out.append({"method": row["method"], "matched": label, "budget": row.get("budget"), "cut_bytes": cut,
                    "cut_basis": basis, "peak_bytes": row.get("peak_bytes"),
                    "saved_activation_bytes": row["saved_activation_bytes"],
                    "recomputed_flops": row["recomputed_flops"],
                    "recompute_overhead": row["recompute_overhead"]})
        budget = matched_budget(row, peak)
        if budget >= peak:  # the best order alone fits: nothing to recompute
            out.append({**out[0], "matched": label, "memory_budget": budget})
            continue
        point = planner_point(graph, budget, time_limit=time_limit, label=label, no_recompute_peak=peak)
        say(f"at the memory of {label} ({budget} B): {'fits' if point['fits'] else 'does not fit'}, recomputes "
            f"{point['recompute_overhead'] if forward else 0:.1%} of the forward pass "
            f"(the anchor {row['recompute_overhead']:.1%})")
        out.append(point)
    transient = peak - graph.persistent_bytes
    for f in fractions:
        point = planner_point(graph, graph.persistent_bytes + int(f * transient), time_limit=time_limit,
                              label=f"{f:g} of the transient peak", no_recompute_peak=peak)
        say(f"at {f:g} of its transient peak: {'fits' if point['fits'] else 'does not fit'}, recomputes "
            f"{point['recompute_overhead'] if forward else 0:.1%} of the forward pass")
        out.append(point)
    return out
