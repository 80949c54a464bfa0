"""Benchmark reports: results JSON and CSV (every figure) and a Markdown summary.

A report is a list of runs' figure dicts (see :func:`model_bench.pipeline.analyze_graph`);
a failed run is a dict with ``model``, ``mode``, ``batch_size`` and ``error``.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model_ir.errors import FormatError
from model_ir.json_format import read_json

RESULTS_FORMAT = "model-bench/1"

#: CSV columns, in order (figures not listed here are in the JSON only).
CSV_COLUMNS = (
    "model", "mode", "batch_size", "optimizer", "autocast", "scheduler", "placer", "solver", "time_limit", "ops", "buffers",
    "parameters", "persistent_bytes", "eager_peak_bytes", "eager_reserved_bytes", "eager_transient_reserved_bytes",
    "eager_reserved_expandable_bytes", "optimizer_in_backward_peak_bytes", "optimizer_in_backward_reserved_bytes",
    "optimizer_in_backward_reserved_expandable_bytes", "strongest_baseline", "strongest_baseline_bytes",
    "optimized_peak_bytes", "lower_bound_bytes", "schedule_gap", "schedule_optimal", "arena_bytes",
    "placement_lower_bound_bytes", "placement_gap", "placement_optimal", "fragmentation", "optimized_total_bytes",
    "peak_saving", "saving_vs_reserved", "best_possible_saving_vs_reserved", "saving_vs_expandable",
    "saving_vs_strongest", "best_possible_saving_vs_strongest", "reorder_reserved_bytes",
    "reorder_reserved_expandable_bytes", "runtime_executor", "runtime_total_bytes", "runtime_executor_expandable",
    "runtime_total_expandable_bytes", "runtime_order", "runtime_order_expandable", "runtime_saving_vs_strongest",
    "device", "workspace_bytes", "eager_workspace_bytes", "measured_gpu", "measured_torch",
    "measured_eager_allocated_bytes", "measured_eager_reserved_bytes", "measured_eager_reserved_expandable_bytes",
    "measured_reorder_reserved_bytes", "measured_reorder_reserved_expandable_bytes",
    "measured_arena_reserved_expandable_bytes", "seconds", "error",
)


def environment() -> dict[str, Any]:
    """Where the figures were measured (versions, machine), for the results JSON."""
    env = {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
           "processor": platform.processor(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        import os

        env["cpus"] = os.cpu_count()
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # figures from a graph file need no torch
        pass
    return env


def to_json(data: Any, **kwargs) -> str:
    """``json.dumps`` of ``data`` as standard JSON: a float that is not finite (``--time-limit
    inf``) is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (Python's ``Infinity``
    is not JSON: other parsers reject the file)."""
    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, Mapping):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(data), allow_nan=False, **kwargs)


def write_results_json(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    data = {"format": RESULTS_FORMAT, "environment": environment(), "results": [dict(r) for r in results]}
    path.write_text(to_json(data, indent=1) + "\n")
    return path


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a results JSON written by :func:`write_results_json`."""
    from model_bench.errors import BenchError

    path = Path(path)
    try:
        data = read_json(path)
    except FormatError as e:
        raise BenchError(str(e)) from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise BenchError(f"{path}: not a {RESULTS_FORMAT} results file")
    results = data.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise BenchError(f"{path}: results: expected a list of objects (one per run)")
    return list(results)


def write_results_csv(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow({k: r.get(k, "") if r.get(k) is not None else "" for k in CSV_COLUMNS})
    return path


def fmt_bytes(n: int | None) -> str:
    """GiB with 4 decimals from 100 MiB up (MODeL's precision), else MiB or KiB with 1
    decimal, 2 below 10 (1.4 MiB hid a 4% gap between a peak and its bound)."""
    if n is None:
        return "-"
    if abs(n) >= 100 * 1024**2:
        return f"{n / 1024**3:.4f} GiB"
    for unit, size in (("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.{1 if abs(n) >= 10 * size else 2}f} {unit}"
    return f"{n} B"


def fmt_percent(x: float | None, digits: int = 1) -> str:
    """``0.3101`` -> ``'31.0%'`` (no ``-0.0%``)."""
    if x is None:
        return "-"
    value = round(100 * x, digits)
    return f"{value + 0.0:.{digits}f}%"


def _order_note(r: Mapping[str, Any]) -> str:
    """``(-31.0%, opt.)``: the order's change against the eager peak, and whether it is proven optimal."""
    change = fmt_percent(-r["peak_saving"])
    if not change.startswith("-"):
        change = "+" + change if change != "0.0%" else "same"
    return f" ({change}{', opt.' if r.get('schedule_optimal') else ''})"


#: The savings the table shows and averages, in its column order.
SAVINGS = ("saving_vs_reserved", "saving_vs_expandable", "saving_vs_strongest", "best_possible_saving_vs_strongest")


#: What a CPU row (``device`` "cpu") does not show: PyTorch's CPU allocator frees each
#: tensor when it dies, so its "reserved" figures are the live peaks (no caching allocator,
#: nothing for expandable segments to change).
_CACHING_ONLY = frozenset({"eager_reserved_bytes", "eager_reserved_expandable_bytes", "saving_vs_expandable"})


def _shown(r: Mapping[str, Any], key: str):
    """``r[key]`` as the table shows it: None where the row has none, or where it means a
    caching allocator the row's device does not have."""
    return None if r.get("device") == "cpu" and key in _CACHING_ONLY else r.get(key)


def _fused_cell(r: Mapping[str, Any]) -> str:
    """The optimizer fused into backward: reserved with expandable segments, its peak on the CPU."""
    if r.get("device") == "cpu":
        return f"{fmt_bytes(r.get('optimizer_in_backward_peak_bytes'))} (peak)"
    return fmt_bytes(r.get("optimizer_in_backward_reserved_expandable_bytes"))


def _mode(r: Mapping[str, Any]) -> str:
    """A row's mode, with its autocast dtype when it ran under one."""
    return f"{r.get('mode')}, {r['autocast']} autocast" if r.get("autocast") else str(r.get("mode"))


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per run; the average savings per mode (and batch size).

    Columns: the eager peak (program order) and what PyTorch reserves for three
    eager baselines (caching-allocator simulations): program order with the default
    setting and with expandable segments, and the optimizer step fused into backward
    with expandable segments; the optimized order's peak and its proven lower bound;
    the plan's memory (persistent plus arena); the plan's saving against the default
    allocator, against expandable segments and against the strongest baseline, and
    the best saving any plan can reach against the strongest (lower bound); what
    model-runtime's ``optimize()`` would hold (its default executor, fallbacks and
    workspaces included, the better allocator setting) and its saving against the
    strongest.
    """
    head = ("| model | mode | batch | eager peak | eager reserved | eager reserved, exp. seg. | "
            "opt. in backward, exp. seg. | optimized peak | lower bound | plan memory | saving vs eager | "
            "vs exp. seg. | vs strongest | best possible | optimize() | optimize() vs strongest | seconds |")
    columns = head.count(" | ")
    lines = [head, "|" + "---|" * columns + "---|"]
    for r in results:
        mode = _mode(r)
        if r.get("error"):
            lines.append(f"| {r.get('model')} | {mode} | {r.get('batch_size')} | "
                         f"failed: {str(r['error']).replace('|', '/')[:120]} |" + " |" * (columns - 3))
            continue
        lines.append(
            f"| {r['model']} | {mode} | {r['batch_size']} | {fmt_bytes(r['eager_peak_bytes'])} | "
            f"{fmt_bytes(_shown(r, 'eager_reserved_bytes'))} | "
            f"{fmt_bytes(_shown(r, 'eager_reserved_expandable_bytes'))} | {_fused_cell(r)} | "
            f"{fmt_bytes(r['optimized_peak_bytes'])}{_order_note(r)} | {fmt_bytes(r['lower_bound_bytes'])} | "
            f"{fmt_bytes(r['optimized_total_bytes'])} | "
            + " | ".join(fmt_percent(_shown(r, k)) for k in SAVINGS)
            + f" | {_runtime_cell(r)} | {fmt_percent(r.get('runtime_saving_vs_strongest'))} | {r['seconds']:.1f} |")
    for mode in ("train", "eval"):
        ok = [r for r in results if not r.get("error") and r.get("mode") == mode]
        batches = sorted({r["batch_size"] for r in ok})
        groups = [(f"batch {b}", [r for r in ok if r["batch_size"] == b]) for b in batches] if len(batches) > 1 else []
        for label, runs in [*groups, ("all", ok)]:
            if runs:
                avg = [fmt_percent(_average(runs, k)) for k in SAVINGS]
                runtime = fmt_percent(_average(runs, "runtime_saving_vs_strongest"))
                lines.append(f"| **average** | {mode} | {label}: {len(runs)} runs |" + " |" * 7
                             + f" {avg[0]} | {avg[1]} | **{avg[2]}** | {avg[3]} | | {runtime} | |")
    return "\n".join(lines) + "\n"


def _runtime_cell(r: Mapping[str, Any]) -> str:
    """What ``optimize()`` would hold with the better allocator setting, and its executor."""
    if r.get("runtime_total_bytes") is None:
        return "-"
    setting = min(("", "_expandable"), key=lambda s: r[f"runtime_total{s}_bytes"])
    return f"{fmt_bytes(r[f'runtime_total{setting}_bytes'])} ({r[f'runtime_executor{setting}']})"


def _average(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``runs``; None if a run lacks it (a results file from an older version)."""
    values = [_shown(r, key) for r in runs if _shown(r, key) is not None]
    return sum(values) / len(values) if values and len(values) == len(runs) else None


LEGEND = (
    "Eager peak: live bytes in program order, each gradient held in `.grad` to the end of the step. "
    "Reserved: what PyTorch's caching allocator reserves (simulated): "
    "program order with the default setting and with `expandable_segments:True`, and the optimizer step fused "
    "into backward (`register_post_accumulate_grad_hook`, one optimizer per parameter) with "
    "`expandable_segments:True`. Strongest: the least reserved of the four eager baselines (program order or "
    "fused optimizer, default allocator or expandable segments). Optimized peak: change against the eager peak, "
    "`opt.` when equal to its lower bound (proven optimal). Plan memory = persistent bytes + arena + the "
    "libraries' workspace (cuBLAS's, estimated per device, `workspace_bytes` in results.json; none on the CPU), "
    "as the eager baselines hold theirs. Saving = 1 - plan memory / baseline; best possible = 1 - (lower bound "
    "+ workspace) / strongest baseline (no order and placement can save more). optimize(): what model-runtime's "
    "`optimize()` would hold (simulated): persistent bytes + what its default executor (`arena`, `reorder` or "
    "`program`, named) holds, the arena executor's fallbacks "
    "(cuDNN convolutions, ...) and the libraries' workspaces included, with the better allocator setting; the "
    "plan's figures assume every buffer in the arena. Seconds: capture to plan, imports excluded. A step captured "
    "for the CPU (`--device cpu`) shows no reserved bytes: PyTorch's CPU allocator frees each tensor when it dies, "
    "so every baseline there is its order's live peak, and its savings are against those peaks.\n"
)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _sim_vs_measured(simulated: int | None, measured: int | None) -> str:
    """``'575 / 664 (-13%)'``: simulated and measured MiB, and the simulation's error."""
    if measured is None:
        return "-"
    error = f" ({fmt_percent(simulated / measured - 1, 0)})" if simulated is not None and measured else ""
    return f"{_mib(simulated)} / {_mib(measured)}{error}"


def measured_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Simulated against measured memory (MiB) for the runs measured on a GPU (``bench --measure``);
    empty when none was."""
    runs = [r for r in results if not r.get("error") and r.get("measured_torch")]
    if not runs:
        return ""
    head = ("| model | mode | batch | eager allocated: sim. / meas. | eager reserved: sim. / meas. | "
            "eager reserved, exp. seg.: sim. / meas. | plan (sim.) | reorder reserved: sim. / meas. | "
            "reorder reserved, exp. seg.: sim. / meas. | arena reserved, exp. seg. | "
            "measured saving vs eager, exp. seg. |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in runs:
        eager = r.get("measured_eager_reserved_expandable_bytes")
        optimized = [r.get(f"measured_{v}_reserved_expandable_bytes") for v in ("reorder", "arena")]
        best = min((x for x in optimized if x is not None), default=None)
        lines.append(
            f"| {r['model']}{' ‡' if r.get('measured_eager_output_held') else ''} | {_mode(r)} | {r['batch_size']} | "
            f"{_sim_vs_measured(r.get('eager_allocated_peak_bytes'), r.get('measured_eager_allocated_bytes'))} | "
            f"{_sim_vs_measured(r.get('eager_reserved_bytes'), r.get('measured_eager_reserved_bytes'))} | "
            f"{_sim_vs_measured(r.get('eager_reserved_expandable_bytes'), eager)} | "
            f"{_mib(r.get('optimized_total_bytes'))} | "
            f"{_sim_vs_measured(r.get('reorder_reserved_bytes'), r.get('measured_reorder_reserved_bytes'))} | "
            f"{_sim_vs_measured(r.get('reorder_reserved_expandable_bytes'), optimized[0])} | {_mib(optimized[1])} | "
            f"{fmt_percent(1 - best / eager) if best is not None and eager else '-'} |")
    gpus = sorted({f"{r.get('measured_gpu', '?')} (torch {r['measured_torch']})" for r in runs})
    return ("\n".join(lines) + "\n\nMeasured on " + ", ".join(gpus) + ": steady-state `torch.cuda.max_memory_allocated`"
            " / `max_memory_reserved`, each step in a fresh process; sim.: this report's simulation; in parentheses "
            "the simulation's error against the measurement.\n"
            + (f"\n{_output_held_note()}\n" if any(r.get("measured_eager_output_held") for r in runs) else ""))


def _output_held_note() -> str:
    from model_runtime.measured_runs import OUTPUT_HELD_NOTE

    return OUTPUT_HELD_NOTE


def gpu_runs_as_figures(gpu_results: Sequence[Mapping[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The eager, reorder and arena runs of ``gpu_matrix.py`` results (model-runtime) as
    ``measured_*`` figures, keyed by ``(model, mode, batch_size, autocast)`` (autocast:
    the dtype's name, or None) of the models with an eager run; a later run of the same
    key, variant and allocator setting replaces an earlier one. ``measured_eager_output_held``:
    a training run measured with the loop that held the model's output through backward
    (results without ``output_released``, from before 2026-11-30's fix)."""
    from model_runtime.measured_runs import eager_output_held, measured_figures

    grouped: dict[tuple, dict] = {}
    held: set[tuple] = set()  # measured before eager_step released the model's output (see measured_table)
    for entry in gpu_results:
        spec = entry["spec"]
        if spec.get("variant") not in ("eager", "reorder", "arena") or "error" in entry["result"]:
            continue
        key = (spec["model"], spec["mode"], spec["batch_size"], spec.get("autocast"))
        grouped.setdefault(key, {}).setdefault(entry["alloc"], {})[spec["variant"]] = entry["result"]
        if spec["variant"] == "eager" and eager_output_held(spec, entry["result"]):
            held.add(key)
    return {key: {**measured_figures({"runs": runs}), **({"measured_eager_output_held": True} if key in held else {})}
            for key, runs in grouped.items() if any("eager" in by_variant for by_variant in runs.values())}


def simulated_vs_measured(results: Sequence[Mapping[str, Any]], gpu_results: Sequence[Mapping[str, Any]]) -> str:
    """:func:`measured_table` of the simulated ``results`` (a suite) joined with the eager
    runs measured by model-runtime's ``gpu_matrix.py`` (same model, mode, batch and autocast)."""
    measured = gpu_runs_as_figures(gpu_results)
    joined = [{**r, **measured[key]} for r in results
              if (key := (r.get("model"), r.get("mode"), r.get("batch_size"), r.get("autocast"))) in measured]
    return measured_table(joined)


def results_block(results: Sequence[Mapping[str, Any]]) -> str:
    """The tables and their legend: what ``results_table.md`` holds and the README shows."""
    measured = measured_table(results)
    return markdown_table(results) + "\n" + LEGEND + (f"\n{measured}" if measured else "")


def markdown_summary(results: Sequence[Mapping[str, Any]], *, title: str = "model-opt bench") -> str:
    """The summary file: the table, what the columns mean and where it was measured."""
    env = environment()
    parts = [f"# {title}\n\n", results_block(results),
             f"\nRun with torch {env.get('torch', '?')}, Python {env['python']}, {env.get('cpus', '?')} CPUs, "
             f"{env['date']}: the memory figures above are simulated (a measured table, where there is one, "
             "names its GPU); the seconds are measured on this machine.\n"]
    return "".join(parts)


#: the files :func:`write_reports` writes
REPORTS = {"json": "results.json", "csv": "results.csv", "summary": "summary.md", "table": "results_table.md"}


def write_reports(results: Sequence[Mapping[str, Any]], out_dir: str | Path, *, title: str = "model-opt bench"
                  ) -> dict[str, Path]:
    """Write the files of :data:`REPORTS` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in REPORTS.items()}
    paths["summary"].write_text(markdown_summary(results, title=title))
    paths["table"].write_text(results_block(results))
    write_results_json(results, paths["json"])
    write_results_csv(results, paths["csv"])
    return paths
