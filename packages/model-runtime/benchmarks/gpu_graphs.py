"""Step time and memory of the planned steps replayed as CUDA graphs, measured on a GPU.

Runs (on a GPU machine, from the repository root):

    uv run python packages/model-runtime/benchmarks/gpu_graphs.py run results.json [--budget 400]

1. step times: each of :data:`CASES` (train) x eager / reorder / reorder+graph / arena /
   arena+graph with ``expandable_segments:True``, 20 steps after 3; the children plan
   side by side (:data:`PARALLEL_TIMED` at a time) and time their steps one at a time
   (a lock file), so nothing else runs on the GPU while a step is timed;
2. memory with PyTorch's default allocator: the same variants, 5 steps after 2;
3. eager with ``expandable_segments:True`` on the rest of the zoo in train at batch 1 and
   32 (the simulation's second baseline, checked by model-bench's
   ``scripts/simulated_vs_measured.py``).

Every run is a fresh process (``model_runtime.measured_runs``); the file holds the
records of ``gpu_matrix.py`` (``kind``, ``spec``, ``alloc``, ``result``). Then

    uv run python packages/model-runtime/benchmarks/gpu_graphs.py render results.json

prints the Markdown tables of model-runtime's docs/measured-gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

#: launch-bound steps first (what the graphs are for), in case the budget runs out
CASES = [("vit_b_16", 1), ("bert-base", 1), ("gpt2", 1), ("alexnet", 32), ("resnet18", 32), ("mobilenet_v2", 32),
         ("vgg16", 32)]
VARIANTS = ("eager", "reorder", "reorder+graph", "arena", "arena+graph")
PARALLEL_TIMED = 10
PARALLEL = 14
MiB = 1 << 20


def _spec(model, batch, variant, steps, warmup, **extra):
    return {"model": model, "mode": "train", "batch_size": batch, "optimizer": "sgd", "device": "cuda",
            "variant": variant, "steps": steps, "warmup": warmup, "time_limit": 5, **extra}


def run(path: str, budget: float, phases=("time", "memory")) -> int:
    from model_bench.sweep import MEASURED_MODELS
    from model_runtime.measured_runs import spawn_variant

    t0 = time.time()
    results: list[dict] = []
    guard = threading.Lock()
    lock_file = os.path.join(tempfile.mkdtemp(), "timing.lock")

    def work(job, end):
        kind, spec, alloc = job
        left = t0 + end * budget - time.time()
        r = {"error": "skipped: out of time"} if left < 20 else spawn_variant(spec, alloc, timeout=min(180, left))
        with guard:
            results.append({"kind": kind, "spec": spec, "alloc": alloc, "result": r})
            with open(path, "w") as f:
                json.dump(results, f)
        print(f"{time.time() - t0:5.0f}s", kind, spec["model"], spec["batch_size"], spec["variant"], alloc,
              r.get("error", "ok").strip().splitlines()[-1][:160] if r.get("error", "ok").strip() else "failed",
              flush=True)

    if "time" in phases:
        timed = [("time", _spec(m, b, v, 20, 3, exclusive=lock_file), "expandable")
                 for m, b in CASES for v in VARIANTS]
        with ThreadPoolExecutor(PARALLEL_TIMED) as pool:
            list(pool.map(lambda j: work(j, 0.45 if "memory" in phases else 1.0), timed))
    if "memory" not in phases:
        return 0
    memory = [("memory", _spec(m, b, v, 5, 2), "default") for m, b in CASES for v in VARIANTS]
    memory += [("zoo", _spec(m, b, "eager", 5, 2), "expandable") for m in MEASURED_MODELS for b in (1, 32)
               if (m, b) not in CASES]
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(lambda j: work(j, 1.0), memory))
    return 0


def _cell(r: dict, variant: str) -> str:
    from model_runtime.measured_runs import eager_output_held

    if "max_reserved_bytes" not in r:
        return "failed" if "error" in r else "-"
    if "error" in r:
        return "failed"
    mark = " ‡" if eager_output_held({"variant": variant, "mode": "train"}, r) else ""
    return f"{r['max_allocated_bytes'] / MiB:.0f} / {r['max_reserved_bytes'] / MiB:.0f}{mark}"


def render(paths) -> str:
    results = []
    for path in paths:
        with open(path) as f:
            results += json.load(f)
    by = {(r["kind"], r["spec"]["model"], r["spec"]["batch_size"], r["alloc"], r["spec"]["variant"]): r["result"]
          for r in results}
    first = next((r["result"] for r in results if "gpu" in r["result"]), {"gpu": "?", "torch": "?"})
    out = [f"Measured on {first['gpu']}, torch {first['torch']}, each variant in a fresh process, "
           "`expandable_segments:True`: median of 20 steps after 3, timed one process at a time. "
           "'+graph': the step replayed as a CUDA graph (`optimize(..., cuda_graph=True)`).", "",
           "| model (train) | " + " | ".join(f"{v} ms" for v in VARIANTS) + " | "
           + " | ".join(f"{v} / eager" for v in VARIANTS[1:]) + " |",
           "|---|" + "---|" * (2 * len(VARIANTS) - 1)]
    for m, b in CASES:
        t = [by.get(("time", m, b, "expandable", v), {}).get("median_step_seconds") for v in VARIANTS]
        if t[0] is None:
            continue
        out.append(f"| {m} b{b} | " + " | ".join("failed" if x is None else f"{1e3 * x:.2f}" for x in t) + " | "
                   + " | ".join("-" if x is None else f"{x / t[0]:.2f}" for x in t[1:]) + " |")
    out += ["", "Memory, steady-state `max_memory_allocated` / `max_memory_reserved` in MiB "
                "(default allocator: 5 steps after 2; expandable segments: the timed runs).", "",
            "| model (train) | allocator | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for m, b in CASES:
        for kind, alloc in (("memory", "default"), ("time", "expandable")):
            out.append(f"| {m} b{b} | {alloc} | "
                       + " | ".join(_cell(by.get((kind, m, b, alloc, v), {}), v) for v in VARIANTS) + " |")
    if any("‡" in line for line in out):
        from model_runtime.measured_runs import OUTPUT_HELD_NOTE

        out += ["", OUTPUT_HELD_NOTE]
    same, all_same, differ, failed = 0, 0, [], []
    for (kind, m, b, alloc, v), r in by.items():
        if v == "eager" or kind == "zoo":
            continue
        if "error" in r:
            failed.append(f"{m} b{b} {v} ({alloc})")
            continue
        ref = by.get((kind, m, b, alloc, "eager"), {}).get("losses")
        if ref and r["losses"][0] == ref[0]:
            same += 1
            all_same += r["losses"] == ref
        else:
            differ.append(f"{m} b{b} {v} ({alloc})")
    out += ["", f"First step's loss bitwise eager's in {same} optimized runs"
            + (f"; not in: {', '.join(sorted(differ))}" if differ else "")
            + (f"; failed: {', '.join(sorted(failed))}" if failed else "")
            + f"; every step's loss (warm-up included) in {all_same}."]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="measure on this machine's GPU, writing JSON")
    r.add_argument("out")
    r.add_argument("--budget", type=float, default=400.0, help="seconds for the whole run (default 400)")
    r.add_argument("--phases", default="time,memory", help="time, memory or both (default time,memory)")
    sub.add_parser("render", help="Markdown tables from results JSON files").add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    if args.what == "run":
        return run(args.out, args.budget, tuple(args.phases.split(",")))
    print(render(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
