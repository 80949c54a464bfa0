"""Measured memory and step time of eager and the executors on a CUDA GPU.

Runs (on a GPU machine, from the repository root):

    uv run python packages/model-runtime/benchmarks/gpu_matrix.py run results.json [--budget 430]

1. the memory matrix: each of :data:`MAIN` (train) x eager / the executors of
   :data:`MATRIX_VARIANTS` (``auto``: what ``optimize()`` runs by default) x PyTorch's
   default allocator / ``expandable_segments:True``, 5 steps after 2 warm-up steps,
   eager and ``auto`` first (those of :data:`TRACED` with the allocator's events);
2. the zoo under the arena executor and ``auto``: every model of model-bench's
   ``MEASURED_MODELS`` in train at batch 1 and 32 and eval at batch 32, with eager
   beside them (first loss compared), the default allocator;
3. step times of :data:`TIMED`, one process at a time (nothing else on the GPU),
   20 steps after 3, with expandable segments.

Every run is a fresh process (``model_runtime.measured_runs``); 1 and 2 run 14 at a time
(memory counters are per process; their times are not used), in that order until 55%
of the budget is spent; a run out of device memory beside the others runs again alone
after them (its record says ``alone``). Then

    uv run python packages/model-runtime/benchmarks/gpu_matrix.py render results.json

prints the Markdown tables of model-runtime's docs/measured-gpu.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

MAIN = [("alexnet", 32), ("vgg16", 32), ("vit_b_16", 1), ("bert-base", 1), ("gpt2", 1), ("resnet18", 32),
        ("mobilenet_v2", 32)]
TIMED = [("alexnet", 32), ("vgg16", 32), ("resnet18", 32), ("vit_b_16", 1), ("bert-base", 1), ("mobilenet_v2", 32)]
#: The variants of the memory matrix, in the order they are started.
MATRIX_VARIANTS = (("eager", "auto"), ("reorder", "arena"), ("program",))
#: The variants timed, one process at a time (the 2026-11-30 results: eager, reorder, arena).
TIMED_VARIANTS = ("eager", "auto", "arena")
#: The optimized variants run on the whole zoo, beside eager.
ZOO_VARIANTS = ("auto", "arena")
#: The memory matrix's ``auto`` runs with the default allocator that also record the
#: caching allocator's events of the whole run (``memory_trace: "all"``): the two of
#: :data:`MAIN` whose arena runs the runtime's simulation missed most (``runtime_backtest.py``).
TRACED = (("alexnet", 32), ("bert-base", 1))
MiB = 1 << 20


def _spec(model, mode, batch, variant, steps, warmup):
    return {"model": model, "mode": mode, "batch_size": batch, "optimizer": "sgd", "device": "cuda",
            "variant": variant, "steps": steps, "warmup": warmup}


def run(path: str, budget: float) -> int:
    from model_bench.sweep import MEASURED_MODELS
    from model_runtime.measured_runs import side_by_side, spawn_variant

    t0 = time.time()
    results: dict[int, dict] = {}  # by job number: the file lists the runs in the order they were started
    guard = threading.Lock()  # the matrix's threads rewrite the file one at a time

    def save(number: int, record: dict):
        with guard:
            results[number] = record
            with open(path, "w") as f:
                json.dump([results[k] for k in sorted(results)], f)

    jobs = [("matrix", _spec(m, "train", b, v, 5, 2), a)
            for group in MATRIX_VARIANTS for m, b in MAIN for a in ("default", "expandable") for v in group]
    for _, spec, alloc in jobs:
        if (spec["model"], spec["batch_size"]) in TRACED and spec["variant"] == "auto" and alloc == "default":
            spec["memory_trace"] = "all"
    main = [x for x, _ in MAIN]
    for m in main + [x for x in MEASURED_MODELS if x not in main]:
        for mode, b in (("train", 1), ("train", 32), ("eval", 32)):
            if not (mode == "train" and (m, b) in MAIN):
                jobs += [("zoo", _spec(m, mode, b, v, 2, 1), "default") for v in ("eager", *ZOO_VARIANTS)]

    def run_job(numbered):
        _, (_, spec, alloc) = numbered
        left = t0 + 0.55 * budget - time.time()
        return spawn_variant(spec, alloc, timeout=min(150, left)) if left >= 15 else None

    def record(numbered, r, alone):
        number, (kind, spec, alloc) = numbered
        save(number, {"kind": kind, "spec": spec, "alloc": alloc, "result": r} | ({"alone": True} if alone else {}))
        # one write per line: print's separate writes of its arguments interleave across the threads
        line = " ".join(map(str, (kind, spec["model"], spec["mode"], spec["batch_size"], spec["variant"], alloc,
                                  r.get("error", "ok").strip().splitlines()[-1][:160])))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    side_by_side(list(enumerate(jobs)), run_job, record, parallel=14)
    for m, b in TIMED:
        for v in TIMED_VARIANTS:
            left = t0 + budget - time.time()
            if left < 20:
                break
            spec = _spec(m, "train", b, v, 20, 3)
            r = spawn_variant(spec, "expandable", timeout=min(90, left))
            save(len(results), {"kind": "time", "spec": spec, "alloc": "expandable", "result": r})
    return 0


def _pct(new, old) -> str:
    return f"{100 * (new - old) / old:+.0f}%"


def render(path: str) -> str:
    from model_runtime.measured_runs import OUTPUT_HELD_NOTE, eager_output_held, planned_device_bytes

    with open(path) as f:
        results = json.load(f)
    by = {(r["kind"], r["spec"]["model"], r["spec"]["mode"], r["spec"]["batch_size"], r["alloc"],
           r["spec"]["variant"]): r["result"] for r in results}
    held = any(eager_output_held(r["spec"], r["result"]) for r in results)
    first = next(r["result"] for r in results if "gpu" in r["result"])
    out = [f"Measured on {first['gpu']}, torch {first['torch']}: steady-state `max_memory_allocated` / "
           "`max_memory_reserved` in MiB over 5 steps after 2, each variant in a fresh process. "
           "'planned' is the arena executor's plan: persistent (measured) + arena + its fallbacks' buffers "
           "(caching allocator, simulated). Savings are of reserved memory against eager with the same allocator.",
           "",
           "| model (train) | allocator | eager | reorder | arena | arena planned | reorder saving | arena saving |",
           "|---|---|---|---|---|---|---|---|"]
    for m, b in MAIN:
        for a in ("default", "expandable"):
            e, ro, ar = (by.get(("matrix", m, "train", b, a, v), {}) for v in ("eager", "reorder", "arena"))
            if any("error" in x or not x for x in (e, ro, ar)):
                out.append(f"| {m} b{b} | {a} | see JSON (failed run) | | | | | |")
                continue
            planned = planned_device_bytes(ar)
            cell = lambda x: f"{x['max_allocated_bytes'] / MiB:.0f} / {x['max_reserved_bytes'] / MiB:.0f}"  # noqa: E731
            mark = " ‡" if eager_output_held({"variant": "eager", "mode": "train"}, e) else ""
            out.append(f"| {m} b{b} | {a} | {cell(e)}{mark} | {cell(ro)} | {cell(ar)} | {planned / MiB:.0f} | "
                       f"{_pct(ro['max_reserved_bytes'], e['max_reserved_bytes'])} | "
                       f"{_pct(ar['max_reserved_bytes'], e['max_reserved_bytes'])} |")
    out += _auto_rows(by)
    if held:
        out += ["", OUTPUT_HELD_NOTE]
    zoo = [(k, r) for k, r in by.items() if k[0] in ("zoo", "matrix") and k[5] == "arena" and k[4] == "default"]
    ok = [(k, r) for k, r in zoo if "error" not in r]
    same = [k for k, r in ok if r["losses"][0] == by.get(k[:5] + ("eager",), {}).get("losses", [None])[0]]
    out += ["", f"Arena executor over the zoo (train b1 and b32, eval b32, default allocator): {len(ok)} of "
                f"{len(zoo)} runs completed; first step's loss (eval: output sum) bitwise equal to eager in "
                f"{len(same)}" + (f" (not: {', '.join(f'{k[1]} {k[2]} b{k[3]}' for k, _ in ok if k not in same)})"
                                  if len(same) < len(ok) else "") + "."]
    runs = [(k, r) for k, r in by.items() if k[0] in ("zoo", "matrix") and k[5] == "auto" and k[4] == "default"]
    if runs:
        done = [(k, r) for k, r in runs if "error" not in r]
        eager = {k: by.get(k[:5] + ("eager",), {}) for k, _ in done}
        more = [k for k, r in done if "max_reserved_bytes" in eager[k]
                and r["max_reserved_bytes"] > eager[k]["max_reserved_bytes"]]
        out += ["", f"`executor=\"auto\"` over the zoo (the same runs): {len(done)} of {len(runs)} completed; "
                    f"reserved more than eager in {len(more)}"
                    + (f" ({', '.join(f'{k[1]} {k[2]} b{k[3]}' for k in more)})" if more else "") + "."]
    timed = [v for v in ("eager", "auto", "reorder", "arena") if any(k[0] == "time" and k[5] == v for k in by)]
    out += ["", "| model (train) | " + " | ".join(f"{v} ms" for v in timed) + " | "
            + " | ".join(f"{v} / eager" for v in timed[1:]) + " |",
            "|---|" + "---|" * (2 * len(timed) - 1)]
    for m, b in TIMED:
        t = {v: by.get(("time", m, "train", b, "expandable", v), {}).get("median_step_seconds") for v in timed}
        if t.get("eager") is None or all(t[v] is None for v in timed[1:]):
            continue
        ms = " | ".join("-" if t[v] is None else f"{1e3 * t[v]:.2f}" for v in timed)
        ratios = " | ".join("-" if t[v] is None else f"{t[v] / t['eager']:.2f}" for v in timed[1:])
        out.append(f"| {m} b{b} | {ms} | {ratios} |")
    return "\n".join(out)


def _auto_rows(by: dict) -> list[str]:
    """The matrix's ``auto`` and ``program`` runs, when it has them: the executor
    ``auto`` ran, what its plan says the device holds, and the savings of reserved
    memory against eager with the same allocator."""
    from model_runtime.measured_runs import planned_device_bytes

    if not any(k[0] == "matrix" and k[5] == "auto" for k in by):
        return []
    out = ["", "| model (train) | allocator | eager reserved | auto: executor | auto reserved | auto planned | "
               "auto saving | program reserved | program saving |", "|---|---|---|---|---|---|---|---|---|"]
    for m, b in MAIN:
        for a in ("default", "expandable"):
            e, au, pr = (by.get(("matrix", m, "train", b, a, v), {}) for v in ("eager", "auto", "program"))
            ok = lambda x: bool(x) and "error" not in x  # noqa: E731
            if not ok(e) or not ok(au):
                out.append(f"| {m} b{b} | {a} | see JSON (failed run) | | | | | | |")
                continue
            reserved = e["max_reserved_bytes"]
            planned = planned_device_bytes(au)
            prog = (f"{pr['max_reserved_bytes'] / MiB:.0f} | {_pct(pr['max_reserved_bytes'], reserved)}"
                    if ok(pr) else "- | -")
            out.append(f"| {m} b{b} | {a} | {reserved / MiB:.0f} | {au['plan'].get('executor', '?')} | "
                       f"{au['max_reserved_bytes'] / MiB:.0f} | {'-' if planned is None else f'{planned / MiB:.0f}'} | "
                       f"{_pct(au['max_reserved_bytes'], reserved)} | {prog} |")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="measure on this machine's GPU, writing JSON")
    r.add_argument("out")
    r.add_argument("--budget", type=float, default=430.0, help="seconds for the whole run (default 430)")
    sub.add_parser("render", help="Markdown tables from a results JSON").add_argument("results")
    args = parser.parse_args(argv)
    if args.what == "run":
        return run(args.out, args.budget)
    print(render(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
