"""Run every placer on MiniMalloc's "challenging" suite and write CSV, JSON and a
Markdown table.

    uv run python packages/model-place/benchmarks/minimalloc_suite.py \
        [--suite ../shared/benchmarks/minimalloc-challenging] [--out bench-out/minimalloc] \
        [--time-limit 60] [--methods none,greedy-size,...]

Each instance is a feasibility problem at the capacity in its file name
(``A.1048576.csv``). The exact methods (``exact``, ``cpsat``) decide that
capacity; ``exact-min`` minimises the arena instead. The heuristics always
minimise; an instance counts as solved when their arena fits the capacity. Every
placement is validated by :func:`model_place.place`. Times are wall-clock seconds
on the machine that runs the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

from model_place import live_bytes_peak, place, placer_names, read_lifetimes_csv

REPO = Path(__file__).resolve().parents[3]
DEFAULT_SUITE = REPO / ".." / "shared" / "benchmarks" / "minimalloc-challenging"
METHODS = ["none", "greedy-size", "best-fit", "caching-allocator", "exact", "exact-min", "cpsat"]
DECIDES = {"exact", "cpsat"}  # methods run at the instance's capacity


def instances(suite: Path) -> list[tuple[str, int, Path]]:
    out = []
    for p in sorted(suite.glob("*.csv")):
        name, _, cap = p.stem.partition(".")
        if cap.isdigit() and len(name) == 1:  # A..K; skips example.12.csv
            out.append((name, int(cap), p))
    return out


def run_one(lts, method: str, capacity: int, time_limit: float) -> dict:
    placer = "exact" if method == "exact-min" else method
    t0 = time.perf_counter()
    r = place(lts, method=placer, capacity=capacity if method in DECIDES else None, time_limit=time_limit)
    wall = time.perf_counter() - t0
    return {
        "method": method, "solved": r.arena_bytes <= capacity, "status": r.status,
        "arena_bytes": r.arena_bytes, "lower_bound_bytes": r.lower_bound_bytes,
        "arena_over_live_peak": r.arena_bytes / live_bytes_peak(lts), "gap": r.gap, "seconds": wall,
        "details": dict(r.details),
    }


def markdown(rows: list[dict], methods: list[str], time_limit: float) -> str:
    by = {(r["instance"], r["method"]): r for r in rows}
    names = sorted({r["instance"] for r in rows})
    head = ["instance", "buffers", "live peak (B)", "capacity (B)"]
    for m in methods:
        head.append(f"{m}: solved, s" if m in DECIDES else
                    (f"{m}: arena/peak, s" if m == "exact-min" else f"{m}: arena/peak"))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        any_row = next(r for r in rows if r["instance"] == n)
        cells = [n, str(any_row["buffers"]), str(any_row["live_peak_bytes"]), str(any_row["capacity"])]
        for m in methods:
            r = by.get((n, m))
            if r is None:
                cells.append("")
            elif m in DECIDES:
                cells.append(f"{'yes' if r['solved'] else 'no (' + r['status'] + ')'}, {r['seconds']:.2f}")
            elif m == "exact-min":
                cells.append(f"{r['arena_over_live_peak']:.3f}{'' if r['gap'] == 0 else '*'}, {r['seconds']:.1f}")
            else:
                cells.append(f"{r['arena_over_live_peak']:.3f}{' (fits)' if r['solved'] else ''}")
        lines.append("| " + " | ".join(cells) + " |")
    solved = {m: sum(1 for n in names if by.get((n, m), {}).get("solved")) for m in methods}
    lines.append("")
    lines.append("Solved at capacity: " + ", ".join(f"{m} {solved[m]}/{len(names)}" for m in methods)
                 + f". Time limit {time_limit:g} s per instance and method. arena/peak: arena over the peak "
                 "of live bytes (1.000 = zero fragmentation); * = not proven optimal in the time limit.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="folder of MiniMalloc CSV instances")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "minimalloc", help="output folder")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per instance and method")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--instances", default="", help="comma-separated instance names (default all)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    todo = instances(args.suite)
    if args.instances:
        keep = set(args.instances.split(","))
        todo = [t for t in todo if t[0] in keep]
    if not todo:
        print(f"no instances found in {args.suite}", file=sys.stderr)
        return 2
    placer_names()  # load every plugin now, so that no instance's time includes it
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.jsonl").unlink(missing_ok=True)
    rows = []
    for name, capacity, path in todo:
        lts = read_lifetimes_csv(path)
        peak = live_bytes_peak(lts)
        for m in methods:
            row = {"instance": name, "buffers": len(lts), "capacity": capacity, "live_peak_bytes": peak,
                   **run_one(lts, m, capacity, args.time_limit)}
            rows.append(row)
            # Rows are appended as they come, so an interrupted sweep keeps its results.
            args.out.mkdir(parents=True, exist_ok=True)
            with open(args.out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} {m:18s} solved={row['solved']!s:5s} arena={row['arena_bytes']} "
                  f"ratio={row['arena_over_live_peak']:.3f} {row['seconds']:.2f}s", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    fields = ["instance", "buffers", "capacity", "live_peak_bytes", "method", "solved", "status", "arena_bytes",
              "lower_bound_bytes", "arena_over_live_peak", "gap", "seconds"]
    with open(args.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "time_limit_s": args.time_limit,
            "suite": str(args.suite)}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    table = markdown(rows, methods, args.time_limit)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
