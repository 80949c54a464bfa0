"""Proving an order optimal beyond ``auto``'s bounds: the first-of-set cut bound, offline.

    uv run python packages/model-sched/benchmarks/first_of_set_proof.py [--models opt-30b] [--optimizers adamw]
        [--time-limit 60] [--out packages/model-sched/benchmarks/results/first_of_set_proof.json]

Each step (train, batch 1, captured for CUDA as ``model-opt bench`` does) is scheduled
with ``auto`` and the time limit; then :func:`model_sched.cut_bound.first_of_set_bound`
is computed for the set of ops whose results are at least as large as the result of
the op at the order's peak (on the OPT steps: the weight gradients). One minimum cut
per op that can come first; with networkx's max-flow about 17 s each on OPT-30B, so
this runs for tens of minutes, which is why ``auto`` does not do it. The row gives
``auto``'s peak and bound, the new bound, and whether the order is now proven.
"""

from __future__ import annotations

import sys
import time

from opt_gaps import RESULTS, sweep  # this folder: the scripts run as files


def run_one(model: str, optimizer: str, time_limit: float) -> dict:
    from model_bench.pipeline import capture_model
    from model_sched import schedule
    from model_sched.bounds import ancestor_masks, descendant_masks
    from model_sched.cut_bound import first_of_set_bound
    from model_sched.liveness import liveness, timeline

    _, graph = capture_model(model, "train", 1, optimizer=optimizer)
    r = schedule(graph, method="auto", time_limit=time_limit)
    lv = liveness(graph)
    order = [graph.op_index[o] for o in r.order]
    tl = timeline(lv, order)
    at_peak = order[max(range(len(order)), key=tl.__getitem__)]
    members = [v for v in range(lv.n_ops) if lv.out_bytes[v] >= max(lv.out_bytes[at_peak], 1)]
    t0 = time.perf_counter()
    bound = first_of_set_bound(lv, members, ancestor_masks(lv), descendant_masks(lv), max_edges=10**8,
                               progress=lambda d, b: print(f"  {graph.ops[d].id}: {b / 2**30:.4f} GiB",
                                                           file=sys.stderr, flush=True))
    best_bound = max(r.lower_bound_bytes, bound)
    return {"model": model, "optimizer": optimizer, "ops": lv.n_ops, "members": len(members),
            "peak_bytes": r.peak_bytes, "auto_bound_bytes": r.lower_bound_bytes, "auto_gap": r.gap,
            "first_of_set_bytes": bound, "proven": best_bound >= r.peak_bytes,
            "gap": (r.peak_bytes - best_bound) / r.peak_bytes, "bound_seconds": round(time.perf_counter() - t0, 1)}


def line(row: dict) -> str:
    return (f"| {row['model']} | {row['optimizer']} | {row['ops']} | {row['members']} | "
            f"{row['peak_bytes'] / 1e9:.3f} GB | {row['auto_bound_bytes'] / 1e9:.3f} GB | "
            f"{row['first_of_set_bytes'] / 1e9:.3f} GB | {100 * row['gap']:.3f}%{' (opt.)' if row['proven'] else ''} | "
            f"{row['bound_seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    return sweep(argv, description=__doc__, models="opt-30b", optimizers="adamw", out=RESULTS / "first_of_set_proof.json",
                 header="| model | optimizer | ops | set | peak | auto's bound | first-of-set bound | gap | bound s |\n"
                        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
                 run=run_one, line=line)


if __name__ == "__main__":
    sys.exit(main())
