"""The runtime's CUDA simulation against optimized steps measured on a GPU: each measured
run of ``gpu_matrix.py run`` (arena, reorder, program or auto executor) simulated again
with today's model, as that run's executor ran, and the error.

    uv run python packages/model-runtime/benchmarks/runtime_backtest.py \\
        packages/model-runtime/benchmarks/results/h200-torch2.11-2026-11-30.json \\
        --json packages/model-runtime/benchmarks/results/h200-torch2.11-2026-11-30-backtest.json

What ``optimize()`` chooses (``executor="auto"``, the copies of ``fallback_results``,
the order, the first block) rests on this simulation, so it is checked against every
measurement at hand. Each run is simulated as its executor ran, by its recorded plan
figures: a plan recorded without ``order_source`` ran the scheduler's order, without
``fallback_copied_bytes`` left every fallback result outside the arena, without
``warm_block_bytes`` (``reorder_warm_block_bytes``) started its steps without a first
block (the executors before 2026-12-01); an eval run recorded without
``step_outputs_released`` held the previous step's outputs through each step (the
measuring loop before 2026-11-30 01:38), counted as that many bytes more, allocated
and reserved (rounded to the allocator's 2 MiB: exact for expandable segments, an
approximation of the default setting). The graph is captured here for CUDA
(emulated kernels), so a kernel the GPU chose differently shows as an error too.
Simulated: persistent bytes plus what the executor holds beside them (reserved:
:func:`model_runtime.beside_arena.held_by`; allocated: the arena plus the live peak of
what PyTorch's allocator holds), against steady-state ``max_memory_reserved`` and
``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from model_bench.pipeline import capture_model
from model_ir import ModelOptError
from model_ir.workspaces import without_workspaces
from model_place import lifetimes_from_graph
from model_runtime import beside_arena, make_plan
from model_runtime.planning import ORDER_EXECUTORS

MiB = 1 << 20
EXECUTORS = ("arena", "reorder", "program", "auto")
WITHIN = 0.05
_SEGMENT = 2 * MiB  # what the caching allocator rounds a large segment to


def measured_runs(records) -> list[dict]:
    """The completed CUDA runs of an optimized executor (no CUDA graph) in ``records``, one
    per case and allocator setting (the first; ``time`` records repeat ``matrix`` ones)."""
    seen, runs = set(), []
    for r in records:
        s, res = r.get("spec", {}), r.get("result", {})
        key = (s.get("model"), s.get("mode"), s.get("batch_size"), s.get("variant"), r.get("alloc"))
        if (s.get("variant") in EXECUTORS and s.get("device") == "cuda" and "max_reserved_bytes" in res
                and "plan" in res and key not in seen):
            seen.add(key)
            runs.append(r)
    return runs


def configuration(record) -> dict:
    """How the run's executor ran, by its plan figures (see the module docstring)."""
    plan, spec = record["result"]["plan"], record["spec"]
    executor = plan.get("executor", spec["variant"])
    if "order_source" not in plan:
        executors = ()
    elif spec["variant"] == "auto":
        executors = ORDER_EXECUTORS
    else:
        executors = tuple(e for e in (executor,) if e in ORDER_EXECUTORS)
    warm_key = "warm_block_bytes" if executor == "arena" else f"{executor}_warm_block_bytes"
    return {"executor": executor, "executors": executors, "first_block": warm_key in plan,
            "fallback_results": spec.get("fallback_results", "auto") if "fallback_copied_bytes" in plan
            else "outside", "expandable": record["alloc"] == "expandable",
            "outputs_held": spec["mode"] == "eval" and not record["result"].get("step_outputs_released")}


@contextmanager
def first_block(enabled: bool):
    """The executors simulated with or without the first block each step starts with
    (:func:`model_runtime.beside_arena.caching_reserve`); without: the caching allocator
    replayed as it comes (how the executors ran before they had one)."""
    if enabled:
        yield
        return
    kept = beside_arena.caching_reserve

    def plain(step, kept_=(), *, held=(), expandable=False):
        return beside_arena.caching_allocator_bytes(step, [*held, *kept_], expandable=expandable), 0

    beside_arena.caching_reserve = plain
    try:
        yield
    finally:
        beside_arena.caching_reserve = kept


def capture(model: str, mode: str, batch: int):
    """The step of a zoo case captured for CUDA on the meta device, as ``bench`` captures
    it (``meta["arena_fallbacks"]``: the arena executor's fallback results), without
    cuDNN's workspaces as buffers (the runtime's simulation adds them itself)."""
    _, graph = capture_model(model, mode, batch)
    return without_workspaces(graph)


def simulate(graph, config: dict, time_limit: float) -> dict:
    """Simulated reserved and allocated bytes of one run's configuration (persistent included)."""
    fallbacks = frozenset(graph.meta["arena_fallbacks"])
    with first_block(config["first_block"]):
        plan = make_plan(graph, device_type="cuda", unplaced=fallbacks, fallback_results=config["fallback_results"],
                         time_limit=time_limit, expandable_segments=config["expandable"],
                         executors=config["executors"])
    f, order, executor = plan.figures, plan.schedule.order, config["executor"]
    alignment = f["alignment_bytes"]
    if executor == "arena":
        placed = frozenset(plan.placement.offsets)
        copies = beside_arena.copy_lifetimes(graph, order, alignment, fallbacks & placed)
        beside = beside_arena.beside_live_bytes(graph, order, alignment,
                                                (fallbacks - placed) | beside_arena.step_outputs(graph), copies, "cuda")
        allocated = f["arena_bytes"] + beside
    else:
        lifetimes = None
        if executor == "program":
            order = [op.id for op in graph.ops]
            lifetimes = lifetimes_from_graph(graph, order, alignment=alignment, eager=True)
        transient = frozenset(b.id for b in graph.buffers if not b.persistent)
        allocated = beside_arena.beside_live_bytes(graph, order, alignment, transient, [], "cuda", lifetimes)
    held = sum(graph.buffer(b).size for b in beside_arena.step_outputs(graph)) if config["outputs_held"] else 0
    held_segments = -(-held // _SEGMENT) * _SEGMENT
    return {"reserved_bytes": f["persistent_bytes"] + beside_arena.held_by(f, executor) + held_segments,
            "allocated_bytes": f["persistent_bytes"] + allocated + held, "order_source": f.get("order_source")}


def backtest(records, *, time_limit: float = 10.0, log=print) -> list[dict]:
    """One row per measured run: its case, configuration, measured and simulated bytes."""
    rows, graphs = [], {}
    for r in measured_runs(records):
        s = r["spec"]
        case = (s["model"], s["mode"], s["batch_size"])
        if case not in graphs:
            graphs[case] = capture(*case)
        config = configuration(r)
        sim = simulate(graphs[case], config, time_limit)
        row = {"model": s["model"], "mode": s["mode"], "batch_size": s["batch_size"], "variant": s["variant"],
               "alloc": r["alloc"], **config, "executors": list(config["executors"]),
               "measured_reserved_bytes": r["result"]["max_reserved_bytes"],
               "measured_allocated_bytes": r["result"]["max_allocated_bytes"], **sim}
        rows.append(row)
        log(_line(row))
    return rows


def _error(row, what: str) -> float:
    return row[f"{what}_bytes"] / row[f"measured_{what}_bytes"] - 1


def _line(row) -> str:
    case = f"{row['model']} {row['mode']} b{row['batch_size']}"
    return (f"  {case:<26} {row['alloc']:<10} {row['executor']:<8} reserved {row['measured_reserved_bytes'] / MiB:7.0f}"
            f" / {row['reserved_bytes'] / MiB:7.0f} ({_error(row, 'reserved'):+6.1%})   allocated "
            f"{row['measured_allocated_bytes'] / MiB:7.0f} / {row['allocated_bytes'] / MiB:7.0f} "
            f"({_error(row, 'allocated'):+6.1%})")


def summary(rows) -> str:
    """How many runs the simulation meets within 5%, by mode, executor and allocator setting."""
    lines = []
    groups = sorted({(r["mode"] != "train", r["executor"], r["alloc"]) for r in rows})
    for key in groups:
        mine = [r for r in rows if (r["mode"] != "train", r["executor"], r["alloc"]) == key]
        counts = {w: sum(abs(_error(r, w)) <= WITHIN for r in mine) for w in ("reserved", "allocated")}
        median = sorted(_error(r, "reserved") for r in mine)[len(mine) // 2]
        worst = max(mine, key=lambda r: abs(_error(r, "reserved")))
        lines.append(f"  {mine[0]['mode']:<5} {key[1]:<8} {key[2]:<10} {len(mine):3} runs: reserved within 5% in "
                     f"{counts['reserved']} (median {median:+.1%}), allocated in {counts['allocated']}; worst "
                     f"reserved {worst['model']} b{worst['batch_size']} {_error(worst, 'reserved'):+.1%}")
    return "\n".join(lines)


def choices(rows) -> str:
    """Where a case ran with both the arena and the reorder executor (same allocator
    setting): how often the one the simulation holds least with is the one that
    reserved least, and what a wrong pick cost (measured)."""
    cases: dict[tuple, dict] = {}
    for r in rows:
        cases.setdefault((r["model"], r["mode"], r["batch_size"], r["alloc"]), {})[r["executor"]] = r
    pairs = [(key, c) for key, c in cases.items() if {"arena", "reorder"} <= set(c)]
    if not pairs:
        return ""
    wrong = []
    for key, c in pairs:
        picked = min(("arena", "reorder"), key=lambda e: c[e]["reserved_bytes"])
        other = "reorder" if picked == "arena" else "arena"
        if c[picked]["measured_reserved_bytes"] > c[other]["measured_reserved_bytes"]:
            cost = c[picked]["measured_reserved_bytes"] / c[other]["measured_reserved_bytes"] - 1
            wrong.append(f"{key[0]} {key[1]} b{key[2]} {key[3]}: {picked}, {cost:+.1%}")
    return (f"  arena or reorder: the simulation's pick reserved least in {len(pairs) - len(wrong)} of {len(pairs)} "
            f"cases" + (f" (not: {'; '.join(wrong)})" if wrong else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("measured", help="results JSON of gpu_matrix.py run")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per solver (default 10)")
    args = p.parse_args(argv)
    try:
        with open(args.measured) as f:
            records = json.load(f)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("not a list of gpu_matrix.py records")
        print("measured / simulated MiB (error), steady state, persistent included:")
        rows = backtest(records, time_limit=args.time_limit)
    except (OSError, ValueError, KeyError, ModelOptError) as e:  # JSONDecodeError is a ValueError
        print(f"runtime_backtest: error: {args.measured}: {e}", file=sys.stderr)
        return 2
    if not rows:
        print("no completed run of an optimized executor on CUDA in that file")
        return 0
    print(summary(rows))
    if picks := choices(rows):
        print(picks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
