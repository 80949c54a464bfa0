"""Measuring eager and optimized steps for real, each variant in a fresh process.

A variant is one way to run a zoo model's step (``eager``, ``reorder``, ``arena``, or a
plugin executor) under one allocator setting (PyTorch's default, or
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``). Each runs in its own Python
process (:func:`run_variant`, started by :func:`measure_model`) so that what one
variant left in PyTorch's caching allocator never counts for another, and so that a
crash (a segfault, an out-of-memory) is reported as that variant's error instead of
ending the report.

What a child measures (CUDA; bytes, seconds):

- ``persistent_allocated_bytes``: ``torch.cuda.memory_allocated()`` once the model,
  the batch and the optimizer exist (parameters, model buffers, inputs);
- for an optimized variant, while ``optimize()`` runs: ``planning_peak_bytes`` (the
  peak of new allocations over what existed before), ``planning_kept_bytes`` (what
  ``optimize()`` keeps: the arena and the optimizer state it creates) and
  ``planning_reserved_bytes`` (new bytes the caching allocator holds afterwards);
- in steady state (after ``warmup`` steps): ``max_allocated_bytes`` and
  ``max_reserved_bytes`` over ``steps`` steps (``torch.cuda.max_memory_*`` after
  ``reset_peak_memory_stats``), the median step time, and every step's loss as an
  exact float (``float.hex``), so that losses compare bitwise across processes.

On the CPU the memory figures are left out (PyTorch keeps no such counters there; the
tests measure the CPU with profiler memory events and the live-storage harness).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

#: allocator setting name -> PYTORCH_CUDA_ALLOC_CONF value (None: unset)
ALLOC_CONFS = {"default": None, "expandable": "expandable_segments:True"}
#: what a child prints before its JSON result
_MARK = "MODEL_OPT_MEASUREMENT "


def run_variant(spec: dict) -> dict:
    """Run one variant in this process and measure it (see the module docstring).

    ``spec``: ``model``, ``mode``, ``batch_size``, ``optimizer``, ``device``,
    ``variant`` (``eager``, an executor name, or ``<executor>+graph``: replayed as a CUDA
    graph, ``optimize(..., cuda_graph=True)``), ``steps``, ``warmup``, ``time_limit``,
    optionally ``fallback_results`` (of ``optimize``);
    diagnostics: ``check_kernels`` (after the measured steps, one more step reporting
    :func:`model_runtime.measure.kernel_mismatches`), ``planning_trace`` (CUDA: the
    largest allocations made while planning, with their Python frames); ``exclusive``:
    the path of a lock file held while the steps run, so that concurrent children plan
    side by side but time their steps one at a time; ``memory_trace`` (CUDA): the
    caching allocator's events during the last step, ``[action, address, bytes]`` each
    (``torch.cuda.memory._record_memory_history`` without stacks), to align eager's real
    allocations with the simulated ones; ``"all"``: every event from before the model is
    built to the end of the last step, with ``memory_trace_step_starts`` (the index of
    each step's first event), to see the segments the first steps create.
    """
    import torch

    from model_ir.plugins import provider
    from model_ir.testing.torch_models import eager_step

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    train = spec["mode"] == "train"
    trace_all = cuda and spec.get("memory_trace") == "all"
    if trace_all:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=1_000_000)
    case = provider("model_opt_models", spec["model"], "model").build(
        spec["mode"], spec["batch_size"], optimizer=spec["optimizer"], device=spec["device"])
    targets = (case.target,) if train and case.target is not None else ()
    autocast = getattr(torch, spec["autocast"]) if spec.get("autocast") else None
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # each step's outputs are dropped before the next step (see the loop below); runs
    # recorded without this held the previous step's outputs through each step
    out: dict = {"torch": torch.__version__, "step_outputs_released": True}
    if cuda:
        sync()
        out["gpu"] = torch.cuda.get_device_name(device)
        out["persistent_allocated_bytes"] = torch.cuda.memory_allocated(device)
    if spec["variant"] == "eager":
        if train:
            out["output_released"] = True  # eager_step drops the model's output after the loss

            def one_step():
                return eager_step(case.model, case.optimizer, case.inputs, case.loss_fn, targets, autocast=autocast)
        else:
            def one_step():
                with torch.no_grad(), (torch.autocast(device.type, dtype=autocast) if autocast is not None
                                       else contextlib.nullcontext()):
                    return case.model(*case.inputs)
    else:
        from model_runtime.optimized_step import optimize

        if cuda:
            base_alloc = torch.cuda.memory_allocated(device)
            base_reserved = torch.cuda.memory_reserved(device)
            torch.cuda.reset_peak_memory_stats(device)
        if cuda and spec.get("planning_trace"):
            torch.cuda.memory._record_memory_history(max_entries=200000)
        t0 = time.perf_counter()
        executor, graphed = executor_of(spec["variant"])
        step = optimize(case.model, case.inputs, loss_fn=case.loss_fn if train else None,
                        optimizer=case.optimizer if train else None, executor=executor,
                        time_limit=spec.get("time_limit"), targets=targets, train=train,
                        memory_budget=spec.get("memory_budget"), cuda_graph=graphed,
                        fallback_results=spec.get("fallback_results", "auto"), autocast=autocast)
        out["planning_seconds"] = time.perf_counter() - t0
        if cuda:
            sync()
            out["planning_peak_bytes"] = torch.cuda.max_memory_allocated(device) - base_alloc
            out["planning_kept_bytes"] = torch.cuda.memory_allocated(device) - base_alloc
            out["planning_reserved_bytes"] = torch.cuda.memory_reserved(device) - base_reserved
            if spec.get("planning_trace"):
                out["planning_allocations"] = _large_allocations(torch.cuda.memory._snapshot())
                torch.cuda.memory._record_memory_history(enabled=None)
        out["plan"] = {k: v for k, v in step.figures().items() if isinstance(v, (int, float, str, bool))}

        def one_step():
            return step(*case.inputs, targets=targets)
    losses, times, step_starts = [], [], []
    lock = open(spec["exclusive"], "a") if spec.get("exclusive") else None  # noqa: SIM115 - held to the end
    if lock is not None:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
    for i in range(spec["warmup"] + spec["steps"]):
        if i == spec["warmup"] and cuda:
            sync()
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(i)
        if trace_all:
            step_starts.append(len(torch.cuda.memory._snapshot()["device_traces"][device.index or 0]))
        trace = cuda and spec.get("memory_trace") is True and i == spec["warmup"] + spec["steps"] - 1
        if trace:
            torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python")
        sync()
        t0 = time.perf_counter()
        result = one_step()
        sync()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
        first = result if isinstance(result, torch.Tensor) else torch.utils._pytree.tree_leaves(result)[0]
        losses.append(float(first.detach().float().sum().item()).hex())
        # A step's outputs (eval: the logits) must not stay alive into the next step's peak.
        del result, first
        if trace:
            events = torch.cuda.memory._snapshot()["device_traces"][device.index or 0]
            torch.cuda.memory._record_memory_history(enabled=None)
            out["memory_trace"] = [[e["action"], e["addr"], e["size"]] for e in events]
    if lock is not None:
        lock.close()  # releases the lock
    if trace_all:
        events = torch.cuda.memory._snapshot()["device_traces"][device.index or 0]
        torch.cuda.memory._record_memory_history(enabled=None)
        out["memory_trace"] = [[e["action"], e["addr"], e["size"]] for e in events]
        out["memory_trace_step_starts"] = step_starts
    if cuda:
        out["max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["max_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    out["median_step_seconds"] = statistics.median(times)
    out["losses"] = losses
    if spec["variant"] != "eager" and step.graphed is not None:
        out["cuda_graph_recordings"] = step.graphed.recordings
    if spec.get("check_kernels") and spec["variant"] != "eager":
        from model_runtime.measure import kernel_mismatches

        out["kernel_mismatches"] = kernel_mismatches(step, *case.inputs, targets=targets)
    return out


def executor_of(variant: str) -> tuple[str, bool]:
    """``(executor, cuda_graph)`` of an optimized variant's name (``arena``, ``arena+graph``)."""
    executor = variant.removesuffix("+graph")
    return executor, executor != variant


def _large_allocations(snapshot, min_bytes: int = 1 << 20, limit: int = 12) -> list:
    """The largest allocations of a CUDA memory-history snapshot, with a few Python frames."""
    events = [e for trace in snapshot.get("device_traces", []) for e in trace
              if e.get("action") == "alloc" and e.get("size", 0) >= min_bytes]
    events.sort(key=lambda e: -e["size"])
    return [{"bytes": e["size"], "frames": [f"{f.get('filename', '?')}:{f.get('line', '?')} {f.get('name', '')}"
                                            for f in e.get("frames", []) if ".py" in f.get("filename", "")][:8]}
            for e in events[:limit]]


def _child_env(alloc: str, extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if ALLOC_CONFS[alloc] is not None:
        env["PYTORCH_CUDA_ALLOC_CONF"] = ALLOC_CONFS[alloc]
    return env


def spawn_variant(spec: dict, alloc: str, *, timeout: float = 600.0, env: dict | None = None) -> dict:
    """Run :func:`run_variant` in a fresh Python process with allocator setting ``alloc``
    (a key of :data:`ALLOC_CONFS`); a crash, a timeout or an error is returned as
    ``{"error": ...}`` with the end of the child's output. ``env``: extra environment variables."""
    cmd = [sys.executable, "-X", "faulthandler", "-m", "model_runtime.measured_runs", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=_child_env(alloc, env), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-40:])
    return {"error": f"{status}: {tail}"}


#: Signs in a child's output that the device ran out of memory (cuBLAS and cuDNN fail
#: their handle's allocation with their own status).
_OUT_OF_MEMORY = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                  "CUDNN_STATUS_NOT_INITIALIZED")


def out_of_memory(result: dict) -> bool:
    """Whether a :func:`spawn_variant` result is a failure for want of device memory.
    Children run side by side share one GPU, so such a run is worth repeating alone."""
    error = result.get("error") or ""
    return any(sign.lower() in error.lower() for sign in _OUT_OF_MEMORY)


#: The result of a run no time was left for.
OUT_OF_TIME = {"error": "skipped: out of time"}


def side_by_side(jobs, run, record, *, parallel: int) -> None:
    """``run(job)`` for each of ``jobs``, ``parallel`` at a time (a :func:`spawn_variant`
    result, or None when no time is left for it), then ``record(job, result, alone)``
    once for each. A run out of device memory beside the others (:func:`out_of_memory`)
    runs again alone after them (``alone``), keeping its first failure when no time is
    left for that: one GPU holds fewer large steps side by side than it measures alone."""
    from concurrent.futures import ThreadPoolExecutor

    crowded: list = []  # (job, its failure)

    def first(job) -> None:
        result = run(job)
        if result is not None and parallel > 1 and out_of_memory(result):
            crowded.append((job, result))
        else:
            record(job, result or OUT_OF_TIME, False)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(first, jobs))
    for job, failure in crowded:
        record(job, run(job) or failure, True)


def measure_model(model: str, *, mode: str = "train", batch_size: int = 8, optimizer: str = "sgd",
                  device: str = "cuda", variants=("eager", "reorder", "arena"), allocs=("default", "expandable"),
                  steps: int = 10, warmup: int = 3, time_limit: float | None = None, progress=None,
                  memory_budget: int | None = None, autocast: str | None = None) -> dict:
    """Measure every variant under every allocator setting, each in a fresh process.

    Returns ``{"model", "mode", "batch_size", "optimizer", "device", "runs": {alloc:
    {variant: figures or {"error": ...}}}, "first_loss_equal": {alloc: {variant: bool}}}``
    (whether the first step's loss is bitwise eager's, per optimized variant; empty
    without an eager run to compare with).
    ``memory_budget`` (bytes): the optimized variants plan under it (recomputation).
    ``autocast`` (``bfloat16``, a torch dtype's name): every variant runs its forward
    pass and loss under ``torch.autocast`` with it.
    """
    from model_ir.cli_values import autocast_name
    from model_runtime.errors import RuntimeLayerError

    try:
        autocast = autocast_name(autocast)
    except ValueError as e:
        raise RuntimeLayerError(str(e)) from None
    base = {"model": model, "mode": mode, "batch_size": batch_size, "optimizer": optimizer, "device": device,
            "steps": steps, "warmup": warmup, "time_limit": time_limit,
            **({"memory_budget": memory_budget} if memory_budget is not None else {}),
            **({"autocast": autocast} if autocast is not None else {})}
    runs: dict = {}
    for alloc in allocs:
        runs[alloc] = {}
        for variant in variants:
            if progress is not None:
                progress(f"{model} {mode} b{batch_size}: {variant}, {alloc} allocator")
            runs[alloc][variant] = spawn_variant({**base, "variant": variant}, alloc)
    equal = {}
    for alloc, by_variant in runs.items():
        ref = by_variant.get("eager", {}).get("losses")
        # no eager run to compare with (not asked for, or failed): unknown, not "different"
        equal[alloc] = {} if not ref else {v: r.get("losses", [None])[0] == ref[0]
                                           for v, r in by_variant.items() if v != "eager" and "losses" in r}
    return {**base, "runs": runs, "first_loss_equal": equal}


#: Footnote of the tables that show eager runs for which :func:`eager_output_held` holds.
OUTPUT_HELD_NOTE = ("‡ eager measured with a loop that held the model's output through backward (results without "
                    "`output_released`); the simulated eager step, and the measured one since, release it after the "
                    "loss. Such a figure counts the output once more at the peak: a language model's logits "
                    "(bert-base b32 477 MiB, gpt2 b1 98 MiB, b32 3141 MiB), a classifier's 0.1 MiB.")


def eager_output_held(spec: dict, result: dict) -> bool:
    """Whether an eager training run was measured with the loop that kept the model's
    output alive through backward: its result predates ``output_released``."""
    return spec.get("variant") == "eager" and spec.get("mode") == "train" and "error" not in result \
        and not result.get("output_released")


def measured_figures(result: dict) -> dict:
    """The flat figures of :func:`measure_model`'s ``result``, for a benchmark report (bytes, seconds).

    Per variant and allocator setting: ``measured_<variant>_allocated_bytes`` and
    ``measured_<variant>_reserved_bytes`` (default allocator; ``..._expandable_bytes``
    with expandable segments), ``measured_<variant>_step_seconds[_expandable]``, or
    ``measured_<variant>_error[_expandable]``; plus ``measured_gpu`` and ``measured_torch``.
    """
    out: dict = {}
    for alloc, by_variant in result["runs"].items():
        suffix = "" if alloc == "default" else f"_{alloc}"
        for variant, r in by_variant.items():
            key = f"measured_{variant.replace('-', '_')}"
            if "error" in r:
                out[f"{key}_error{suffix}"] = r["error"].strip().splitlines()[-1][:200] if r["error"].strip() else "failed"
                continue
            out.setdefault("measured_torch", r.get("torch"))
            if "gpu" in r:
                out.setdefault("measured_gpu", r["gpu"])
            for what in ("allocated", "reserved"):
                if f"max_{what}_bytes" in r:
                    out[f"{key}_{what}{suffix}_bytes"] = r[f"max_{what}_bytes"]
            out[f"{key}_step_seconds{suffix}"] = r["median_step_seconds"]
    return out


def planned_device_bytes(run: dict) -> int | None:
    """What the plan of one measured run says the device holds in steady state (bytes).

    Persistent bytes (measured when the run has them, else the plan's) plus what the
    executor that ran holds beside them by the plan's figures
    (:func:`model_runtime.beside_arena.held_by`: for the arena executor the arena and
    what lies beside it in PyTorch's caching allocator, simulated; for the reorder and
    program executors their transient memory). Plans made before those figures: the
    arena and its fallbacks' results (``unplaced_caching_allocator_bytes``), or the
    planned peak. None for ``eager`` (no plan).
    """
    from model_runtime.beside_arena import held_by

    plan = run.get("plan", {})
    persistent = run.get("persistent_allocated_bytes", plan.get("persistent_bytes", 0))
    executor = plan.get("executor") or ("arena" if "arena_bytes" in plan else "reorder")
    held = held_by(plan, executor)
    if held is None:
        return plan.get("peak_bytes")
    if executor == "arena" and "beside_arena_bytes" not in plan:
        held += plan.get("unplaced_caching_allocator_bytes", 0)
    return persistent + held


def _mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def render_measurement(result: dict) -> str:
    """A text table of :func:`measure_model`'s result (MiB, milliseconds)."""
    amp = f" under {result['autocast']} autocast" if result.get("autocast") else ""
    lines = [f"{result['model']} {result['mode']} batch {result['batch_size']}{amp} on {result['device']} "
             "(measured, each variant in a fresh process; MiB, ms)"]
    head = (f"{'allocator':<11}{'variant':<9}{'max alloc':>10}{'max reserved':>13}{'planned':>9}"
            f"{'step ms':>9}{'loss 1 = eager':>16}")
    lines.append(head)
    for alloc, by_variant in result["runs"].items():
        for variant, r in by_variant.items():
            if "error" in r:
                lines.append(f"{alloc:<11}{variant:<9}  FAILED: {r['error'].strip().splitlines()[-1][:100]}")
                continue
            planned = planned_device_bytes(r)
            same = result["first_loss_equal"].get(alloc, {}).get(variant)
            lines.append(f"{alloc:<11}{variant:<9}{_mib(r.get('max_allocated_bytes')):>10}"
                         f"{_mib(r.get('max_reserved_bytes')):>13}{_mib(planned):>9}"
                         f"{1e3 * r['median_step_seconds']:>9.2f}{'' if same is None else ('yes' if same else 'NO'):>16}")
    first = next((r for rs in result["runs"].values() for r in rs.values() if "torch" in r), {})
    lines.append(f"torch {first.get('torch', '?')}" + (f", {first['gpu']}" if "gpu" in first else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    result = run_variant(json.loads(argv[0]))
    print(_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
