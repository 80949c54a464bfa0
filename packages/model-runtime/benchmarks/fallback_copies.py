"""Where the arena executor's fallback results live: outside the arena, copied into it,
or ``auto`` (``optimize(..., fallback_results=)``), and which executor
``optimize(executor="auto")`` runs, in one run.

1. Simulated, for the graphs CUDA runs (captured here with emulated CUDA kernels), with
   the default allocator and with expandable segments: persistent + arena + what lies
   beside it in PyTorch's caching allocator (the results left outside, the copies'
   temporaries, the step outputs, cuBLAS's and cuDNN's workspaces), and persistent +
   the reorder and the program executors' transient memory, MiB; the executor ``auto``
   picks.
2. Measured on this CPU (torch.profiler memory events, allocation by allocation): what a
   steady step allocates beyond the arena, against the plan's ``beside_arena_bytes``, and the step time of
   all copied against all outside (interleaved rounds, median).

    uv run python packages/model-runtime/benchmarks/fallback_copies.py
    uv run python packages/model-runtime/benchmarks/fallback_copies.py --cuda alexnet:32 --cpu alexnet:32 \\
        --json packages/model-runtime/benchmarks/results/fallback_copies.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from model_bench.zoo import build_case
from model_ir.testing.live_memory import exact_peak_allocated_during
from model_ir.torch import capture_step, init_optimizer_state
from model_runtime import make_plan, optimize
from model_runtime.beside_arena import least_memory_executor
from model_runtime.lowering import fallback_buffers

WAYS = ("outside", "copied", "auto")
SETTINGS = {"default": False, "expandable": True}
CUDA_CASES = ("alexnet:32", "vgg16:32", "resnet18:32", "mobilenet_v2:32", "vit_b_16:1", "bert-base:1", "gpt2:1",
              "resnet18:32:eval", "vgg16:32:eval", "googlenet:32:eval")
CPU_CASES = ("alexnet:32", "resnet18:8", "vgg16:8")
MiB = 1 << 20


def _case(spec: str, device: str):
    """A zoo case from ``MODEL:BATCH[:MODE]`` (train by default)."""
    name, batch, *mode = spec.split(":")
    return build_case(name, mode[0] if mode else "train", int(batch), device=device)


def simulated_cuda(spec: str, time_limit: float) -> dict:
    """Per allocator setting: arena and what lies beside it, each way, the reorder
    executor's transient memory and the executor ``auto`` runs, for the graph CUDA runs
    (bytes)."""
    case = _case(spec, "meta")
    if case.train:
        init_optimizer_state(case.optimizer)
        captured = capture_step(case.model, case.inputs, loss_fn=case.loss_fn, optimizer=case.optimizer,
                                targets=(case.target,), device="cuda", granularity=512)
    else:
        captured = capture_step(case.model, case.inputs, train=False, device="cuda", granularity=512)
    fallbacks = fallback_buffers(captured, "cuda")
    row = {"case": spec, "fallback_bytes": sum(captured.graph.buffer(b).size for b in fallbacks),
           "persistent_bytes": captured.graph.persistent_bytes}
    for setting, expandable in SETTINGS.items():
        cell = {}
        for way in WAYS:
            f = make_plan(captured.graph, device_type="cuda", unplaced=fallbacks, fallback_results=way,
                          time_limit=time_limit, expandable_segments=expandable).figures
            cell[way] = {k: f[k] for k in ("arena_bytes", "beside_arena_bytes", "fallback_copied_bytes",
                                           "library_workspace_bytes")}
            row["transient_peak_bytes"] = f["transient_peak_bytes"]
        # of the plan optimize() makes (fallback_results="auto"): its order is the one least held
        cell["reorder_transient_bytes"] = f["reorder_transient_bytes"]
        cell["program_transient_bytes"] = f["program_transient_bytes"]
        cell["order_source"] = f["order_source"]
        cell["auto_executor"] = least_memory_executor(f)
        row[setting] = cell
    return row


def measured_cpu(spec: str, time_limit: float, rounds: int) -> dict:
    """Beyond-the-arena bytes measured and planned, and step times, each way (CPU)."""
    torch.manual_seed(0)
    case = _case(spec, "cpu")
    targets = (case.target,)
    steps = {way: optimize(case.model, case.inputs, loss_fn=case.loss_fn, optimizer=case.optimizer,
                           targets=targets, time_limit=time_limit, executor="arena", fallback_results=way)
             for way in WAYS}
    row = {"case": spec}
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for r in range(rounds + 1):
        for way, step in steps.items():
            start = time.perf_counter()
            step(*case.inputs, targets=targets)
            if r:  # the first round warms up
                times[way].append(time.perf_counter() - start)
    for way, step in steps.items():
        beyond, _ = exact_peak_allocated_during(lambda step=step: step(*case.inputs, targets=targets))
        f = step.figures()
        row[way] = {"arena_bytes": f["arena_bytes"], "beside_arena_bytes": f["beside_arena_bytes"],
                    "measured_beyond_arena_bytes": beyond, "fallback_copied_bytes": f["fallback_copied_bytes"],
                    "median_step_seconds": statistics.median(times[way])}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuda", nargs="*", default=list(CUDA_CASES), metavar="MODEL:BATCH")
    p.add_argument("--cpu", nargs="*", default=list(CPU_CASES), metavar="MODEL:BATCH")
    p.add_argument("--time-limit", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "cuda_simulated": [], "cpu_measured": []}
    print("simulated for CUDA (MiB, persistent included): arena executor with fallbacks all outside / all copied "
          "/ auto; reorder executor; program executor; what executor='auto' runs")
    for spec in args.cuda:
        r = simulated_cuda(spec, args.time_limit)
        out["cuda_simulated"].append(r)
        for setting in SETTINGS:
            c, p = r[setting], r["persistent_bytes"]
            totals = " / ".join(f"{(p + c[w]['arena_bytes'] + c[w]['beside_arena_bytes']) / MiB:.0f}" for w in WAYS)
            print(f"  {spec:<16} {setting:<10} {totals}; reorder {(p + c['reorder_transient_bytes']) / MiB:.0f}; "
                  f"program {(p + c['program_transient_bytes']) / MiB:.0f}; auto: {c['auto_executor']}, "
                  f"{c['order_source']} order  (transient peak {r['transient_peak_bytes'] / MiB:.0f}, workspaces "
                  f"alone {c['auto']['library_workspace_bytes'] / MiB:.0f}, auto copies "
                  f"{c['auto']['fallback_copied_bytes'] / MiB:.0f} of {r['fallback_bytes'] / MiB:.0f})")
    print(f"measured on this CPU ({args.threads} threads), MiB: arena + beyond it measured / planned, step ms")
    for spec in args.cpu:
        r = measured_cpu(spec, args.time_limit, args.rounds)
        out["cpu_measured"].append(r)
        cells = "; ".join(f"{w} {r[w]['arena_bytes'] / MiB:.0f} + {r[w]['measured_beyond_arena_bytes'] / MiB:.1f}"
                          f" / {r[w]['beside_arena_bytes'] / MiB:.1f}, {1000 * r[w]['median_step_seconds']:.0f} ms"
                          for w in WAYS)
        ratio = r["copied"]["median_step_seconds"] / r["outside"]["median_step_seconds"]
        print(f"  {spec:<16} {cells}; copied/outside time {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
