"""``recompute`` on large training steps: does a budget fit, in how long, for how many FLOPs?

    uv run python packages/model-sched/benchmarks/recompute_large.py [--cases opt-1.3b:4:0.5,...]
        [--time-limit 60] [--out packages/model-sched/benchmarks/results/recompute_large.json]

Each case is ``model:batch:share``: the zoo model's training step (SGD, captured for
CUDA kernels with the forward made recomputable, as ``optimize(memory_budget=...)`` and
``model-opt bench --budget`` capture it) is scheduled without a budget (``auto``), then
with ``memory_budget`` = persistent bytes + ``share`` of that plan's transient peak
(``schedule(graph, memory_budget=B, method="recompute", time_limit=T)``). The row gives
the ops, both peaks, whether the budget fits, the recomputed FLOPs per FLOP of the
forward pass, and the seconds the budgeted schedule took (it returns as soon as the
budget fits and its cheapening is done, or at the time limit). Simulated peaks; the
seconds are this machine's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from opt_gaps import sweep

RESULTS = Path(__file__).resolve().parent / "results"
CASES = "opt-1.3b:4:0.5,opt-6.7b:1:0.9,opt-6.7b:1:0.8"


def run_one(case: str, optimizer: str, time_limit: float) -> dict:
    from model_bench.pipeline import budget_figures, capture_model
    from model_sched import schedule

    model, batch, share = case.split(":")
    t0 = time.perf_counter()
    _, graph = capture_model(model, "train", int(batch), optimizer=optimizer, for_recompute=True)
    capture_seconds = time.perf_counter() - t0
    plain = schedule(graph, method="auto", time_limit=time_limit)
    persistent = graph.persistent_bytes
    budget = persistent + int(float(share) * (plain.peak_bytes - persistent))
    r = schedule(graph, method="recompute", memory_budget=budget, time_limit=time_limit)
    figures = budget_figures(graph, r)
    return {"model": model, "batch_size": int(batch), "share": float(share), "optimizer": optimizer,
            "ops": len(graph.ops), "persistent_bytes": persistent, "unbudgeted_peak_bytes": plain.peak_bytes,
            "budget_bytes": budget, "peak_bytes": r.peak_bytes, "fits": figures["fits_budget"],
            "recomputed_ops": figures["recomputed_ops"], "recompute_forward_ratio": figures["recompute_forward_ratio"],
            "seconds": round(r.seconds, 1), "capture_seconds": round(capture_seconds, 1)}


def line(row: dict) -> str:
    ratio = row["recompute_forward_ratio"]
    return (f"| {row['model']} | {row['batch_size']} | {row['ops']} | {row['unbudgeted_peak_bytes'] / 2**30:.2f} GiB | "
            f"{row['share']:.2f} | {row['peak_bytes'] / 2**30:.2f} GiB | {'yes' if row['fits'] else 'no'} | "
            f"{'-' if ratio is None else f'{100 * ratio:.1f}%'} | {row['seconds']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # the sweep's --models are this script's --cases
    args = ["--models" if a == "--cases" else a.replace("--cases=", "--models=") for a in args]
    return sweep(args, description=__doc__, models=CASES, optimizers="sgd", out=RESULTS / "recompute_large.json",
                 header="| model | batch | ops | peak without budget | share of transient | peak | fits | "
                        "recomputed / forward FLOPs | seconds |\n|---|---:|---:|---:|---:|---:|---|---:|---:|",
                 run=run_one, line=line)


if __name__ == "__main__":
    sys.exit(main())
