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
    from model_runtime.measured_runs import ALLOC_CONFS, side_by_side, spawn_variant

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

    def spec_of(case):
        model, mode, batch, alloc, variant = case
        return {"model": model, "mode": mode, "batch_size": batch, "optimizer": "sgd", "device": "cuda",
                "variant": variant, "steps": 5, "warmup": 2,
                "memory_trace": "all" if args.trace_all else args.trace,
                **({"autocast": AUTOCAST[args.autocast]} if args.autocast else {})}

    def run(case):
        left = t0 + args.budget - time.time()
        return spawn_variant(spec_of(case), case[3], timeout=min(180, left)) if left >= 15 else None

    def record(case, r, alone):
        model, mode, batch, alloc, variant = case
        with guard:
            results.append({"kind": "zoo", "spec": spec_of(case), "alloc": alloc, "result": r}
                           | ({"alone": True} if alone else {}))
            with open(args.out, "w") as f:
                json.dump(results, f)
        print(f"{time.time() - t0:5.0f}s {model} {mode} b{batch} {alloc} {variant}: "
              f"{(r.get('error') or 'failed').strip().splitlines()[-1][:160] if 'error' in r else 'ok'}", flush=True)

    side_by_side(cases, run, record, parallel=args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
