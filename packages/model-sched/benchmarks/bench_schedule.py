"""Benchmark every scheduler on a suite of graphs and write CSV, JSON and Markdown.

    uv run python packages/model-sched/benchmarks/bench_schedule.py [GRAPH.json ...]
        [--time-limit 60] [--out packages/model-sched/benchmarks/results] [--quick] [--no-backends]

The suite: random graphs (the Hypothesis family, seeded) of growing size, checked
against brute force where every order can be enumerated; random layered DAGs up to
5,000 ops; synthetic ResNet- and transformer-style training steps
(:mod:`training_graphs`); and any ``model-ir/1`` graph files given on the command
line (captured models). For each graph: eager peak, each greedy baseline, the best
of them, ``auto``'s peak, its lower bound, the gap and the seconds. A second table
times the exact back ends (search and the MILP solvers) on whole small graphs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_graphs import random_layered, random_program, resnet_like, transformer_like  # noqa: E402

from model_ir.json_format import load_graph  # noqa: E402
from model_ir.simulator import simulate  # noqa: E402
from model_ir.testing.strategies import topological_orders  # noqa: E402
from model_sched import schedule  # noqa: E402
from model_sched.errors import SolverUnavailableError  # noqa: E402
from model_sched.liveness import liveness, peak  # noqa: E402

HEURISTICS = ("program", "lpmf", "bfs", "dfs")
ENUMERATION_LIMIT = 200_000


def suite(quick: bool):
    """(family, graph) pairs, smallest first."""
    out = [("random (enumerable)", random_program(8, s)) for s in range(10 if not quick else 3)]
    for n in (20, 30, 40):
        out += [("random", random_program(n, s)) for s in range(3 if not quick else 1)]
    if not quick:
        out += [("random", random_program(n, 0)) for n in (80, 200)]
    out += [("layered", random_layered(n, 0)) for n in ((200, 1000, 5000) if not quick else (200,))]
    out += [("resnet-like step", resnet_like(b)) for b in ((8, 16, 32) if not quick else (8,))]
    out += [("transformer-like step", transformer_like(k)) for k in ((2, 12, 24) if not quick else (2,))]
    return out


def brute_force(graph) -> int | None:
    lv = liveness(graph)
    best, count = None, 0
    for order in topological_orders(graph, limit=ENUMERATION_LIMIT + 1):
        count += 1
        if count > ENUMERATION_LIMIT:
            return None
        p = peak(lv, order)
        best = p if best is None else min(best, p)
    return best


def run_graph(family: str, graph, time_limit: float) -> dict:
    row: dict = {"graph": graph.name, "family": family, "ops": len(graph.ops), "buffers": len(graph.buffers)}
    for h in HEURISTICS:
        row[h] = schedule(graph, method=h).peak_bytes
    row["best_heuristic"] = min(row[h] for h in HEURISTICS)
    r = schedule(graph, method="auto", time_limit=time_limit)
    assert simulate(graph, r.order).peak_bytes == r.peak_bytes  # validated again, independently
    row.update(eager_peak=r.eager_peak_bytes, auto_peak=r.peak_bytes, lower_bound=r.lower_bound_bytes,
               gap=round(r.gap, 6), optimal=r.optimal, seconds=round(r.seconds, 3), source=r.source)
    row["saving_vs_eager"] = round(1 - r.peak_bytes / r.eager_peak_bytes, 6) if r.eager_peak_bytes else 0.0
    if family == "random (enumerable)":
        bf = brute_force(graph)
        row["brute_force"] = bf
        row["matches_brute_force"] = None if bf is None else bf == r.peak_bytes
    return row


def run_backends(time_limit: float, quick: bool) -> list[dict]:
    """Whole-graph exact solve of random graphs: best-first search vs each MILP backend."""
    from model_sched import greedy
    from model_sched.bounds import forced_bound
    from model_sched.milp import build_milp, order_from_solution, peak_bytes_of_units, solution_from_order
    from model_sched.search import exact_search
    from model_sched.solvers import CpSatBackend, GurobiBackend, HighsBackend

    rows = []
    sizes = (10, 20, 30, 40) if not quick else (10, 20)
    for n in sizes:
        for seed in range(3 if not quick else 1):
            g = random_program(n, seed)
            lv = liveness(g)
            start = min((getattr(greedy, f"{h}_order")(lv) for h in HEURISTICS), key=lambda o: peak(lv, o))
            ub = peak(lv, start)
            t = time.perf_counter()
            out = exact_search(lv, upper=ub, lower=forced_bound(lv).bytes, deadline=t + time_limit)
            best = out.peak if out.order is not None else ub
            rows.append({"graph": g.name, "ops": n, "backend": "search", "proved": out.complete,
                         "peak": best, "bound": out.bound, "seconds": round(time.perf_counter() - t, 3)})
            m = build_milp(lv)
            for backend in (HighsBackend(), CpSatBackend(), GurobiBackend()):
                t = time.perf_counter()
                try:
                    res = backend.solve(m.program, time_limit=time_limit, hint=solution_from_order(m, lv, start))
                except SolverUnavailableError:
                    rows.append({"graph": g.name, "ops": n, "backend": backend.name, "proved": None,
                                 "peak": None, "bound": None, "seconds": None,
                                 "columns": m.program.n_vars, "rows": len(m.program.rows)})
                    continue
                p = peak(lv, order_from_solution(m, res.values)) if res.values is not None else None
                bound = peak_bytes_of_units(m, res.bound) if math.isfinite(res.bound) else None
                rows.append({"graph": g.name, "ops": n, "backend": backend.name, "proved": res.optimal,
                             "peak": p, "bound": bound, "seconds": round(time.perf_counter() - t, 3),
                             "columns": m.program.n_vars, "rows": len(m.program.rows)})
            print(f"backends {g.name}: " + ", ".join(
                f"{r['backend']} {r['seconds']}s{'*' if r['proved'] else ''}" for r in rows[-4:]), file=sys.stderr)
    return rows


def fmt_bytes(n) -> str:
    if n is None:
        return ""
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"


def markdown(rows: list[dict], backend_rows: list[dict], time_limit: float, backend_time_limit: float) -> str:
    lines = [f"Time limit {time_limit:g} s per graph (`auto`); bytes include persistent buffers.", "",
             "| graph | family | ops | eager peak | best greedy | auto peak | lower bound | gap | optimal | seconds | brute force |",
             "|---|---|---:|---:|---:|---:|---:|---:|:-:|---:|:-:|"]
    for r in rows:
        bf = {True: "match", False: "MISMATCH", None: "too many orders"}.get(r.get("matches_brute_force"), "")
        if "matches_brute_force" not in r:
            bf = ""
        family = "captured (file)" if r["family"] == "file" else r["family"]
        lines.append(f"| {r['graph']} | {family} | {r['ops']} | {fmt_bytes(r['eager_peak'])} | {fmt_bytes(r['best_heuristic'])} | "
                     f"{fmt_bytes(r['auto_peak'])} | {fmt_bytes(r['lower_bound'])} | {100 * r['gap']:.2f}% | "
                     f"{'yes' if r['optimal'] else 'no'} | {r['seconds']:.2f} | {bf} |")
    if backend_rows:
        names = list(dict.fromkeys(r["backend"] for r in backend_rows))
        lines += ["", "Exact back ends on whole random graphs (3 graphs per size, "
                  f"{backend_time_limit:g} s limit each): graphs proved optimal, and the slowest time.", "",
                  "| ops | MILP columns | " + " | ".join(names) + " |", "|---:|---:|" + "---|" * len(names)]
        for n in sorted({r["ops"] for r in backend_rows}):
            cells, cols = [], [r["columns"] for r in backend_rows if r["ops"] == n and r.get("columns")]
            for name in names:
                rs = [r for r in backend_rows if r["ops"] == n and r["backend"] == name]
                if all(r["seconds"] is None for r in rs):
                    cells.append("licence limit")
                    continue
                proved = sum(bool(r["proved"]) for r in rs)
                cells.append(f"{proved}/{len(rs)}, max {max(r['seconds'] for r in rs if r['seconds'] is not None):.2f} s")
            lines.append(f"| {n} | {min(cols)}-{max(cols)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs", nargs="*", help="extra model-ir/1 graph files (e.g. captured models)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per graph for auto (default 60)")
    ap.add_argument("--backend-time-limit", type=float, default=30.0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--quick", action="store_true", help="a few small graphs only")
    ap.add_argument("--no-backends", action="store_true", help="skip the back-end comparison")
    ap.add_argument("--render", metavar="JSON", help="only rewrite schedule.md from a schedule.json")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        md = markdown(data["graphs"], data["backends"], data["time_limit"], data.get("backend_time_limit", 30.0))
        (Path(args.render).parent / "schedule.md").write_text(md)
        print(md)
        return 0
    graphs = suite(args.quick) + [("file", load_graph(p)) for p in args.graphs]
    rows = []
    for family, g in graphs:
        row = run_graph(family, g, args.time_limit)
        rows.append(row)
        print(f"{row['graph']}: {row['ops']} ops, eager {row['eager_peak']}, greedy {row['best_heuristic']}, "
              f"auto {row['auto_peak']}, bound {row['lower_bound']}, {row['seconds']} s", file=sys.stderr)
    backend_rows = [] if args.no_backends else run_backends(args.backend_time_limit, args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(out / "schedule.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "schedule.json").write_text(json.dumps({"time_limit": args.time_limit, "graphs": rows,
                                                   "backend_time_limit": args.backend_time_limit,
                                                   "backends": backend_rows}, indent=1) + "\n")
    (out / "schedule.md").write_text(markdown(rows, backend_rows, args.time_limit, args.backend_time_limit))
    print(f"wrote {out}/schedule.csv, schedule.json, schedule.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
