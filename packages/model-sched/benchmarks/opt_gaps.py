"""``auto``'s gap on the OPT training steps, the largest graphs of the zoo.

    uv run python packages/model-sched/benchmarks/opt_gaps.py [--models opt-125m,...,opt-66b (every size)]
        [--optimizers sgd,adamw] [--time-limit 60] [--out packages/model-sched/benchmarks/results/opt_gaps.json]

Each step (train, batch 1, captured for CUDA as ``model-opt bench`` does) is scheduled
once with ``auto`` and the time limit; the row gives the ops, the peak, the bound, the
gap, the seconds ``auto`` ran, and the seconds at which it had found its final order
(from the progress reports): what a user waiting for a gap under 0.05% waits.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(model: str, optimizer: str, time_limit: float) -> dict:
    from model_bench.pipeline import capture_model
    from model_sched import schedule

    t0 = time.perf_counter()
    _, graph = capture_model(model, "train", 1, optimizer=optimizer)
    capture_seconds = time.perf_counter() - t0
    found_at = [0.0]
    best = [None]

    def progress(p):
        if best[0] is None or p.best_peak_bytes < best[0]:
            best[0], found_at[0] = p.best_peak_bytes, p.seconds

    r = schedule(graph, method="auto", time_limit=time_limit, progress=progress)
    return {"model": model, "optimizer": optimizer, "ops": len(graph.ops), "peak_bytes": r.peak_bytes,
            "lower_bound_bytes": r.lower_bound_bytes, "gap": r.gap, "optimal": r.optimal, "source": r.source,
            "seconds": round(r.seconds, 2), "final_order_seconds": round(found_at[0], 2),
            "capture_seconds": round(capture_seconds, 1)}


def line(row: dict) -> str:
    return (f"| {row['model']} | {row['optimizer']} | {row['ops']} | {row['peak_bytes'] / 1e9:.3f} GB | "
            f"{row['lower_bound_bytes'] / 1e9:.3f} GB | {100 * row['gap']:.3f}%{' (opt.)' if row['optimal'] else ''} | "
            f"{row['final_order_seconds']:.1f} | {row['seconds']:.1f} | {row['source']} |")


def sweep(argv: list[str] | None, *, description: str, models: str, optimizers: str, out: Path,
          header: str, run, line) -> int:
    """The command line of an OPT benchmark: ``run(model, optimizer, time_limit)`` for each
    pair asked for, each row printed with ``line`` under the markdown ``header`` and the
    rows so far written to the JSON file after each one (a long sweep keeps what it did)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=models)
    p.add_argument("--optimizers", default=optimizers)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--out", default=str(out))
    args = p.parse_args(argv)
    rows = []
    print(header)
    for model in args.models.split(","):
        for optimizer in args.optimizers.split(","):
            row = run(model, optimizer, args.time_limit)
            rows.append(row)
            print(line(row), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                                                  "time_limit": args.time_limit, "rows": rows}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return sweep(argv, description=__doc__, models="opt-125m,opt-350m,opt-1.3b,opt-2.7b,opt-6.7b,opt-13b,opt-30b,opt-66b",
                 optimizers="sgd,adamw", out=RESULTS / "opt_gaps.json",
                 header="| model | optimizer | ops | peak | bound | gap | final order at s | auto s | found by |\n"
                        "|---|---|---:|---:|---:|---:|---:|---:|---|",
                 run=run_one, line=line)


if __name__ == "__main__":
    sys.exit(main())
