#!/usr/bin/env python3
"""Measure eager steps of zoo models on a CUDA GPU, each in a fresh process: the measured
side of ``simulated_vs_measured.py`` (and optimized steps, to trace what they allocate).

    uv run python packages/model-bench/scripts/eager_on_gpu.py OUT.json [CASE ...] [--trace | --trace-all] [--budget S]
        [--autocast bf16]

A CASE is ``MODEL:MODE:BATCH:ALLOCATOR[:VARIANT]`` (``resnet18:train:32:default``; allocator
``default`` or ``expandable``; variant ``eager``, the default, or an executor of
``optimize()``: ``auto``, ``arena``, ``reorder``, ``program``); without any, every zoo model of the suite in eval at
batch 32 with the default allocator. ``--trace`` adds the caching allocator's events of
the last step (``memory_trace``: ``[action, address, bytes]``), to align eager's real
allocations (or an executor's) with the simulated ones; ``--trace-all`` those of the whole run, from before
the model is built (with ``memory_trace_step_starts``), to see which segments the first
steps create. ``--autocast bf16`` runs every case's forward pass and loss under
``torch.autocast`` (the spec's ``autocast``). OUT.json holds the records of model-runtime's
``benchmarks/gpu_matrix.py`` (``kind``, ``spec``, ``alloc``, ``result``), written after
every run. A case out of device memory beside the others runs again alone at the end
(its record says ``alone``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from model_ir.cli_values import AUTOCAST

VARIANTS = ("eager", "auto", "arena", "reorder", "program")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("cases", nargs="*",
                   help="MODEL:MODE:BATCH:ALLOCATOR[:VARIANT] (default: the zoo, eval b32, default, eager)")
    p.add_argument("--trace", action="store_true", help="record the allocator's events of the last step")
    p.add_argument("--trace-all", action="store_true",
                   help="record the allocator's events of the whole run, from before the model is built")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run (default 300)")
    p.add_argument("--parallel", type=int, default=14, help="processes at a time (default 14)")
    p.add_argument("--autocast", choices=tuple(AUTOCAST), default=None, help="mixed precision (the AMP recipe)")
    args = p.parse_intermixed_args(argv)  # cases may follow the options
    from model_bench.sweep import MEASURED_MODELS
    from model_runtime.measured_runs import ALLOC_CONFS, out_of_memory, spawn_variant

    cases = []
    for text in args.cases or [f"{m}:eval:32:default" for m in MEASURED_MODELS]:
        try:
            model, mode, batch, alloc, *variant = text.split(":")
            if len(variant) > 1:
                raise ValueError
            cases.append((model, mode, int(batch), alloc, variant[0] if variant else "eager"))
        except ValueError:
            p.error(f"case {text!r} is not MODEL:MODE:BATCH:ALLOCATOR[:VARIANT]")
        if alloc not in ALLOC_CONFS or mode not in ("train", "eval") or cases[-1][-1] not in VARIANTS:
            p.error(f"case {text!r}: mode is train or eval, allocator one of {', '.join(ALLOC_CONFS)}, "
                    f"variant one of {', '.join(VARIANTS)}")
    t0 = time.time()
    results: list[dict] = []
    guard = threading.Lock()

    crowded: list[tuple] = []  # (case, its failure): out of device memory beside other runs, to run alone

    def work(case, crowded_out=None):
        model, mode, batch, alloc, variant = case
        spec = {"model": model, "mode": mode, "batch_size": batch, "optimizer": "sgd", "device": "cuda",
                "variant": variant, "steps": 5, "warmup": 2,
                "memory_trace": "all" if args.trace_all else args.trace,
                **({"autocast": AUTOCAST[args.autocast]} if args.autocast else {})}
        left = t0 + args.budget - time.time()
        if left >= 15:
            r = spawn_variant(spec, alloc, timeout=min(180, left))
        else:  # a run crowded out keeps its failure when no time is left to run it alone
            r = crowded_out or {"error": "skipped: out of time"}
        if out_of_memory(r) and crowded_out is None and args.parallel > 1:
            crowded.append((case, r))
            r = {"error": "out of device memory beside other runs: to run again alone"}
        else:
            with guard:
                alone = {"alone": True} if crowded_out is not None else {}
                results.append({"kind": "zoo", "spec": spec, "alloc": alloc, "result": r} | alone)
                with open(args.out, "w") as f:
                    json.dump(results, f)
        print(f"{time.time() - t0:5.0f}s {model} {mode} b{batch} {alloc} {variant}: "
              f"{(r.get('error') or 'failed').strip().splitlines()[-1][:160] if 'error' in r else 'ok'}", flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(work, cases))
    for case, failure in crowded:
        work(case, failure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
