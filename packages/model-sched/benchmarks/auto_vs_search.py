"""Time ``auto`` against ``search`` (and ``lns``) on the same graphs, in one process.

    uv run python packages/model-sched/benchmarks/auto_vs_search.py [GRAPH.json ...]
        [--methods auto,search] [--repeat 3] [--time-limit 60] [--no-synthetic]
        [--out packages/model-sched/benchmarks/results/auto_vs_search.json]

``auto`` should never be much slower than the fastest method that proves the
optimum. For each graph (seeded synthetic layered graphs, plus any ``model-ir/1``
files given, e.g. captured models) it runs each method ``--repeat`` times with
:func:`model_sched.schedule`, takes the median wall-clock seconds (the whole call:
liveness, bounds, solve, validation), and prints a table with each method's peak,
bound, whether it proved the optimum, and ``auto``'s time over ``search``'s. The
rows go to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_graphs import random_layered  # noqa: E402

from model_ir.json_format import load_graph  # noqa: E402
from model_sched import schedule, scheduler_names  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def time_method(graph, method: str, repeat: int, time_limit: float) -> dict:
    """Median wall seconds of ``repeat`` calls of ``schedule(graph, method=...)``, with the
    figures of the last call."""
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = schedule(graph, method=method, time_limit=time_limit)
        seconds.append(time.perf_counter() - t)
    return {"seconds": round(statistics.median(seconds), 4), "all_seconds": [round(s, 4) for s in seconds],
            "peak_bytes": r.peak_bytes, "lower_bound_bytes": r.lower_bound_bytes, "optimal": r.optimal,
            "source": r.source}


def run(graphs, methods: list[str], repeat: int, time_limit: float) -> list[dict]:
    rows = []
    for g in graphs:
        row = {"graph": g.name, "ops": len(g.ops), "methods": {}}
        for m in methods:
            row["methods"][m] = time_method(g, m, repeat, time_limit)
        if "auto" in methods and "search" in methods:
            row["auto_over_search"] = round(row["methods"]["auto"]["seconds"]
                                            / max(row["methods"]["search"]["seconds"], 1e-9), 2)
        rows.append(row)
        print(line(row, methods), file=sys.stderr, flush=True)
    return rows


def line(row: dict, methods: list[str]) -> str:
    cells = [f"{row['graph']:<22} {row['ops']:>6}"]
    for m in methods:
        r = row["methods"][m]
        cells.append(f"{r['seconds']:>8.2f}{'*' if r['optimal'] else ' '}")
    if "auto_over_search" in row:
        cells.append(f"{row['auto_over_search']:>7.2f}x")
    return " ".join(cells)


def table(rows: list[dict], methods: list[str]) -> str:
    head = f"{'graph':<22} {'ops':>6} " + " ".join(f"{m + ' s':>9}" for m in methods)
    if rows and "auto_over_search" in rows[0]:
        head += " auto/search"
    return "\n".join([head] + [line(r, methods) for r in rows]) + "\n(* proved optimal; median wall seconds)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs", nargs="*", help="model-ir/1 graph files (e.g. model-opt capture output)")
    ap.add_argument("--methods", default="auto,search", help="comma-separated schedulers (default auto,search)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; the median is reported (default 3)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per call (default 60)")
    ap.add_argument("--no-synthetic", action="store_true", help="only the graph files given")
    ap.add_argument("--out", default=str(RESULTS / "auto_vs_search.json"), help="JSON file to write")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(scheduler_names()))
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(scheduler_names())}")
    graphs = [] if args.no_synthetic else [random_layered(n, 0) for n in (200, 1000)]
    graphs += [load_graph(p) for p in args.graphs]
    rows = run(graphs, methods, args.repeat, args.time_limit)
    print(table(rows, methods))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"methods": methods, "repeat": args.repeat, "time_limit": args.time_limit,
                               "python": platform.python_version(), "machine": platform.machine(),
                               "graphs": rows}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
