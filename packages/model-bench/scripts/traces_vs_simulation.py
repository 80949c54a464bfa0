#!/usr/bin/env python3
"""Where the simulated caching allocator and a traced GPU run part ways.

    uv run python packages/model-bench/scripts/traces_vs_simulation.py \\
        packages/model-runtime/benchmarks/results/h200-torch2.11-2026-11-30-eager-traces.json [MORE.json ...] \\
        [--top N] [--json OUT.json]

Each file holds records of ``eager_on_gpu.py`` or model-runtime's ``gpu_matrix.py``; the
runs with an allocator trace (``--trace``: the last step; ``--trace-all``: the whole
run) are checked (``model_bench.allocator_traces``). For every one it prints the
measured reserved bytes, the simulation's (an eager run: ``bench``'s eager baseline of
that allocator setting), and those of the simulated allocator fed the recorded requests:
the whole run's when it was traced whole, else the recorded step replayed to the steady
state beside the simulated persistent buffers. When the recorded requests reproduce the
measurement, the allocator model is right and the miss is in the requests; the
alignment of the recorded step's allocations with the simulated step's then lists which
(moved, resized, present on one side only, largest first). An optimized run (``auto``,
``arena``, ...) traced whole gets the replay only. Exit status 2 on a file that is not
such records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import attrs

from model_bench.allocator_traces import align, trace_lifetimes, trace_reserved_bytes


def _mib(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} B"


def _error(measured: int, other: int) -> str:
    return f"{(other - measured) / measured:+.1%}" if measured else "-"


def check_run(run: dict) -> dict | None:
    """The figures of one traced run (bytes), or None when it has no trace."""
    from model_place import simulate_caching_allocator, simulate_training_steps

    spec, result = run["spec"], run["result"]
    events = result.get("memory_trace")
    if not isinstance(events, list):
        return None
    starts = result.get("memory_trace_step_starts")
    whole = isinstance(starts, list) and bool(starts)
    expandable = run.get("alloc") == "expandable"
    held, step = trace_lifetimes(events, starts[-1] if whole else 0)
    out = {"model": spec["model"], "mode": spec["mode"], "batch_size": spec["batch_size"],
           "alloc": run.get("alloc"), "variant": spec.get("variant", "eager"),
           "traced": "run" if whole else "last step",
           "measured_reserved_bytes": result.get("max_reserved_bytes"),
           "recorded_step_allocations": len(step)}
    if whole:
        out["recorded_segments_bytes"] = trace_reserved_bytes(events)
        out["replayed_reserved_bytes"] = simulate_caching_allocator(
            trace_lifetimes(events)[1], expandable_segments=expandable).reserved_bytes
        out["recorded_held_bytes"] = sum(lt.size for lt in held)
    if out["variant"] != "eager":
        return out
    from model_bench.pipeline import capture_model
    from model_ir.workspaces import with_workspaces
    from model_runtime.eager_allocator import allocator_steps

    from model_ir.cli_values import AUTOCAST

    autocast = next((name for name, dtype in AUTOCAST.items() if dtype == spec.get("autocast")), None)
    if spec.get("autocast") and autocast is None:
        raise ValueError(f"autocast {spec['autocast']!r} of {spec['model']} is not one bench captures")
    _, graph = capture_model(spec["model"], spec["mode"], spec["batch_size"], optimizer=spec["optimizer"], seconds={},
                             autocast=autocast)
    kept, simulated = allocator_steps(with_workspaces(graph))
    out["simulated_reserved_bytes"] = simulate_training_steps(kept, simulated,
                                                              expandable_segments=expandable).reserved_bytes
    out["simulated_held_bytes"] = sum(lt.size for lt in kept)
    if not whole:
        out["replayed_reserved_bytes"] = simulate_training_steps(kept, step,
                                                                 expandable_segments=expandable).reserved_bytes
    out["simulated_step_allocations"] = sum(1 for lt in simulated if lt.size)
    out["alignment"] = attrs.asdict(align(simulated, step))
    return out


def describe(row: dict, top: int = 5) -> str:
    """A few lines on one :func:`check_run` row."""
    measured = row["measured_reserved_bytes"] or 0
    head = (f"{row['model']} {row['mode']} b{row['batch_size']} {row['alloc']} ({row['variant']}, "
            f"{row['traced']} traced)")
    figures = [f"measured {_mib(measured)}"]
    if "simulated_reserved_bytes" in row:
        figures.append(f"simulated {_mib(row['simulated_reserved_bytes'])} "
                       f"({_error(measured, row['simulated_reserved_bytes'])})")
    figures.append(f"recorded requests replayed {_mib(row['replayed_reserved_bytes'])} "
                   f"({_error(measured, row['replayed_reserved_bytes'])})")
    if "recorded_segments_bytes" in row:
        figures.append(f"the trace's segments {_mib(row['recorded_segments_bytes'])}")
    lines = [head, "  reserved: " + ", ".join(figures)]
    if "recorded_held_bytes" in row and "simulated_held_bytes" in row:
        lines.append(f"  held into the last step: recorded {_mib(row['recorded_held_bytes'])}, "
                     f"simulated {_mib(row['simulated_held_bytes'])}")
    al = row.get("alignment")
    if al is None:
        return "\n".join(lines)
    only_sim, only_rec = al["only_simulated"], al["only_recorded"]
    lines.append(
        f"  step allocations: simulated {row['simulated_step_allocations']}, recorded "
        f"{row['recorded_step_allocations']}: {al['matched']} in order, {len(al['moved'])} moved, "
        f"{len(al['resized'])} resized, {len(only_sim)} only simulated ({_mib(sum(s for _, s in only_sim))}), "
        f"{len(only_rec)} only recorded ({_mib(sum(s for _, s, _ in only_rec))})")
    if only_rec:
        largest = sorted(only_rec, key=lambda r: -r[1])[:top]
        lines.append("  only recorded: " + "; ".join(
            f"{_mib(s)} after {after or 'the start'}" for _, s, after in largest))
    if only_sim:
        largest = sorted(only_sim, key=lambda r: -r[1])[:top]
        lines.append("  only simulated: " + "; ".join(f"{i} {_mib(s)}" for i, s in largest))
    if al["resized"]:
        largest = sorted(al["resized"], key=lambda r: -abs(r[3] - r[1]))[:top]
        lines.append("  resized: " + "; ".join(f"{i} {_mib(s)} -> {_mib(rs)}" for i, s, _, rs in largest))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results JSON of eager_on_gpu.py or gpu_matrix.py")
    p.add_argument("--top", type=int, default=5, help="requests listed per kind (default: %(default)s)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    runs = []
    for path in args.results:
        try:
            records = json.loads(Path(path).read_text())
            if not isinstance(records, list) or not all(isinstance(r, dict) and "spec" in r and "result" in r
                                                        for r in records):
                raise ValueError("not a list of records with 'spec' and 'result'")
        except (OSError, ValueError) as e:
            print(f"traces_vs_simulation: error: {path}: {e}", file=sys.stderr)
            return 2
        runs += records
    rows = []
    for run in runs:
        try:
            row = check_run(run)
        except ValueError as e:
            print(f"traces_vs_simulation: error: {e}", file=sys.stderr)
            return 2
        if row is not None:
            rows.append(row)
            print(describe(row, args.top), flush=True)
    if not rows:
        print("no run of these files has an allocator trace")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
