"""The files one benchmark run writes: graph, plan, plots and memory snapshots."""

from __future__ import annotations

from pathlib import Path

from model_bench.memory_snapshot import (
    allocator_allocations,
    plan_allocations,
    save_snapshot,
    snapshot_from_allocations,
)
from model_bench.pipeline import BenchRun, eager_lifetimes, eager_workspaces
from model_bench.plots import plot_layout, plot_live_bytes
from model_bench.reports import fmt_percent
from model_ir import save_graph, save_plan

ARTIFACTS = {
    "graph": "graph.json",
    "plan": "plan.json",
    "live_bytes_plot": "live_bytes.png",
    "plan_layout_plot": "layout_plan.png",
    "eager_layout_plot": "layout_caching_allocator.png",
    "plan_snapshot": "snapshot_plan.pickle",
    "eager_snapshot": "snapshot_eager.pickle",
}


def run_label(figures) -> str:
    """``alexnet-train-b32``: the directory name of a run."""
    return f"{figures.get('model', 'graph')}-{figures.get('mode', 'step')}-b{figures.get('batch_size', 0)}"


def write_artifacts(run: BenchRun, out_dir: str | Path) -> dict[str, Path]:
    """Write every file of :data:`ARTIFACTS` for ``run`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    f = run.figures
    label = run_label(f)
    paths = {k: out / v for k, v in ARTIFACTS.items()}
    save_graph(run.graph, paths["graph"])
    save_plan(run.plan(), paths["plan"])
    plot_live_bytes(
        paths["live_bytes_plot"],
        {"eager (program order)": run.eager.timeline, f"optimized ({f['schedule_method']})": run.optimized.timeline},
        title=(f"{label}: live bytes over the step; plan memory {fmt_percent(-f['saving_vs_strongest'])} "
               f"vs the strongest eager baseline ({f['strongest_baseline']})"),
        levels={**({"optimizer in backward peak": f["optimizer_in_backward_peak_bytes"]}
                   if f.get("device") == "cpu" else  # the CPU: no caching allocator
                   {"eager reserved (caching allocator)": f["eager_reserved_bytes"],
                    "eager reserved (expandable segments)": f["eager_reserved_expandable_bytes"],
                    "optimizer in backward reserved (expandable segments)":
                        f["optimizer_in_backward_reserved_expandable_bytes"]}),
                "plan memory (persistent + arena + workspace)": f["optimized_total_bytes"],
                "lower bound (any order)": f["lower_bound_bytes"]},
    )
    plan_allocs, plan_segments, steps = plan_allocations(run.graph, run.order, run.placement.offsets,
                                                         run.placement.arena_bytes,
                                                         workspace_bytes=f.get("workspace_bytes", 0))
    plot_layout(paths["plan_layout_plot"], plan_allocs, segments=plan_segments, steps=steps,
                peak_bytes=run.optimized.peak_bytes,
                title=f"{label}: plan layout ({f['placement_method']}), fragmentation "
                      f"{100 * f['fragmentation']:.2f}%")
    save_snapshot(snapshot_from_allocations(plan_allocs, plan_segments, steps), paths["plan_snapshot"])
    alloc = run.eager_allocator
    lifetimes = eager_lifetimes(run.graph, workspaces=eager_workspaces(run.graph))
    eager_allocs, eager_segments, steps = allocator_allocations(run.graph, lifetimes, alloc.offsets, alloc.segments)
    plot_layout(paths["eager_layout_plot"], eager_allocs, segments=eager_segments, steps=steps,
                peak_bytes=run.eager.peak_bytes,
                title=f"{label}: eager caching allocator, {len(alloc.segments)} segments, "
                      f"reserved {alloc.reserved_bytes / 2**20:.1f} MiB"
                      + (" (CUDA's; PyTorch's CPU allocator holds the live bytes)" if f.get("device") == "cpu"
                         else ""))
    save_snapshot(snapshot_from_allocations(eager_allocs, eager_segments, steps), paths["eager_snapshot"])
    return paths
