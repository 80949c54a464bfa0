"""The largest batch size that fits a memory budget, eager against the optimized plan.

Memory grows with the batch size, so the search doubles the batch until it no
longer fits, then bisects. Each probe captures the step at that batch size (fake
tensors: no real memory) and computes

- eager: the memory the caching allocator reserves in program order with its
  default setting (on the CPU, which has none, the live peak), and the strongest
  eager baseline (the least of program order or the optimizer fused into backward,
  default allocator or expandable segments;
  :func:`model_bench.pipeline.eager_baselines`), simulated; or, with ``measure``,
  ``torch.cuda.max_memory_reserved`` of real eager steps on the GPU with the
  default allocator and with expandable segments, each in a fresh process (an
  out-of-memory error counts as not fitting);
- optimized: what model_runtime's ``optimize()`` holds for the step, persistent
  bytes plus what its default executor (``executor="auto"``) holds, the fallbacks'
  results and the libraries' workspaces beside the arena included, with the better
  allocator setting (:func:`model_bench.pipeline.runtime_figures`, simulated); or,
  with ``measure``, the reserved bytes of that step on the GPU (expandable segments,
  a fresh process);
- plan (simulated only): the plan's memory, persistent bytes plus the placed arena of
  the optimized order plus library workspaces, as if every buffer were in the arena:
  what the order and placement alone promise, an optimistic figure where the runtime
  leaves results outside its arena (cuDNN's convolutions);
- with ``recompute``: a plan under a memory budget (recomputation, simulated): the
  peak budget is the memory less the workspaces, and the plan fits when persistent
  bytes, its arena and the workspaces do.
"""

from __future__ import annotations

import functools

import attrs
from collections.abc import Callable
from typing import Any

from model_bench.errors import BenchError
from model_ir import cli_values, simulate
from model_bench.pipeline import (
    BenchSettings,
    capture_model,
    eager_baselines,
    holds_live_bytes,
    place_order,
    plan_workspace_bytes,
    runtime_figures,
    schedule_graph,
    simulate_eager_allocator,
)
from model_bench.progress import Progress

def parse_bytes(text: str, flag: str = "--memory") -> int:
    """``"16GiB"`` -> bytes (:func:`model_ir.cli_values.parse_bytes`), at least one byte;
    errors name ``flag``."""
    try:
        value = cli_values.parse_bytes(text)
    except ValueError:
        raise BenchError(f"{flag}: cannot read memory size {text!r}; write e.g. 16GiB, 500MiB, 16GB or "
                         "1073741824") from None
    if value <= 0:
        raise BenchError(f"{flag}: memory size must be positive, got {text!r}")
    return value


def largest_fitting(fits: Callable[[int], bool], *, limit: int) -> int:
    """The largest ``b`` in ``[1, limit]`` with ``fits(b)``, for a monotone ``fits`` (0 if none).

    Doubles from 1 until a batch does not fit or the limit is passed, then bisects:
    about ``2 log2(answer)`` probes.
    """
    if not fits(1):
        return 0
    lo, hi = 1, limit + 1  # fits(lo); hi is the smallest batch known not to fit (limit + 1: none known)
    b = 2
    while b <= limit:
        if not fits(b):
            hi = b
            break
        lo, b = b, b * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def measure_cuda(model: str, mode: str, batch_size: int, settings: BenchSettings = BenchSettings(), *,
                 optimized: bool = False, alloc: str = "default") -> int | None:
    """``torch.cuda.max_memory_reserved`` of real steps in a fresh process; None if they fail
    (out of memory). ``optimized``: model_runtime's ``optimize()`` (its default executor) instead of eager;
    ``alloc``: the allocator setting (``default`` or ``expandable``).

    Weights, optimizer state and the batch are created on the GPU first, so they are
    part of the figure, as they are of the simulated eager reserve.
    """
    from model_runtime.measured_runs import spawn_variant

    spec = {"model": model, "mode": mode, "batch_size": batch_size, "optimizer": settings.optimizer,
            "device": "cuda", "variant": "auto" if optimized else "eager", "steps": 2, "warmup": 1,
            "time_limit": settings.time_limit,
            **({"autocast": cli_values.AUTOCAST[settings.autocast]} if settings.autocast else {})}
    return spawn_variant(spec, alloc).get("max_reserved_bytes")


def max_batch(model: str, memory_bytes: int, *, mode: str = "train", settings: BenchSettings = BenchSettings(),
              limit: int = 4096, measure: bool = False, progress: Progress | None = None,
              recompute: bool = False) -> dict[str, Any]:
    """Largest eager and optimized batch sizes within ``memory_bytes``, and every probe made;
    with ``recompute``, also the largest batch a plan with recomputation fits, and what
    its recomputation costs there (``recompute_overhead``: FLOPs per FLOP of the step)."""
    from model_bench.zoo import check_mode, get_model

    get_model(model)
    check_mode(mode)
    if limit < 1:
        raise BenchError(f"the batch size limit must be >= 1, got {limit}")
    progress = progress or Progress(quiet=True)
    probes: dict[int, dict[str, Any]] = {}

    # The eager and the optimized searches probe mostly the same batch sizes; a few
    # graphs are kept (large models' graphs are big; with --recompute, two per batch).
    @functools.lru_cache(maxsize=8 if recompute else 4)
    def graph(b: int, for_recompute: bool = False):
        progress.say(f"batch {b}: capture" + (" (recomputable forward)" if for_recompute else ""))
        return capture_model(model, mode, b, optimizer=settings.optimizer, granularity=settings.granularity,
                             device=settings.device, for_recompute=for_recompute, autocast=settings.autocast)[1]

    def eager_probe(b: int) -> dict[str, Any]:
        p = probes.setdefault(b, {"batch_size": b})
        if "eager_bytes" in p:
            return p
        if measure:
            p["eager_bytes"] = measure_cuda(model, mode, b, settings)
            p["strongest_bytes"] = measure_cuda(model, mode, b, settings, alloc="expandable")
            p["strongest_baseline"] = "eager-expandable"
        else:
            g = graph(b)
            # The CPU's allocator frees each tensor when it dies: eager holds its live peak.
            allocator = None if holds_live_bytes(g) else simulate_eager_allocator(g)
            baselines = eager_baselines(g, allocator)
            p["eager_bytes"] = simulate(g, eager=True).peak_bytes if allocator is None else allocator.reserved_bytes
            p["strongest_bytes"] = baselines["strongest_baseline_bytes"]
            p["strongest_baseline"] = baselines["strongest_baseline"]
        progress.say(f"batch {b}: eager {p['eager_bytes']} bytes, strongest baseline ({p['strongest_baseline']}) "
                     f"{p['strongest_bytes']} bytes")
        return p

    def fits(probe: Callable[[int], dict[str, Any]], key: str) -> Callable[[int], bool]:
        """Whether batch ``b`` fits by ``probe(b)[key]`` (None: it does not)."""
        def fitting(b: int) -> bool:
            nbytes = probe(b)[key]
            return nbytes is not None and nbytes <= memory_bytes
        return fitting

    def optimized_probe(b: int) -> dict[str, Any]:
        p = probes.setdefault(b, {"batch_size": b})
        if "optimized_bytes" in p:
            return p
        if measure:
            p["optimized_bytes"] = measure_cuda(model, mode, b, settings, optimized=True, alloc="expandable")
            progress.say(f"batch {b}: optimized {p['optimized_bytes']} bytes")
            return p
        g = graph(b)
        sched, _ = schedule_graph(g, settings)
        p["optimized_lower_bound_bytes"] = sched.lower_bound_bytes
        if sched.lower_bound_bytes > memory_bytes:
            # Proven: no order fits, hence no plan, nor optimize() (which holds at least an order's peak).
            p["optimized_bytes"] = p["plan_bytes"] = None
            progress.say(f"batch {b}: no plan fits (lower bound {sched.lower_bound_bytes} bytes)")
            return p
        placement = place_order(g, sched.order, settings)
        p["plan_bytes"] = g.persistent_bytes + placement.arena_bytes + plan_workspace_bytes(g)
        runtime = runtime_figures(g, settings)
        if runtime:
            setting = min(("", "_expandable"), key=lambda s: runtime[f"runtime_total{s}_bytes"])
            p["optimized_bytes"] = runtime[f"runtime_total{setting}_bytes"]
            p["optimized_executor"] = runtime[f"runtime_executor{setting}"]
            p["optimized_expandable_segments"] = setting == "_expandable"
        else:  # a graph without the runtime's fallbacks recorded: the plan is all there is
            p["optimized_bytes"] = p["plan_bytes"]
        progress.say(f"batch {b}: optimize() {p['optimized_bytes']} bytes, plan {p['plan_bytes']} bytes")
        return p

    def recompute_fits(b: int) -> bool:
        p = probes.setdefault(b, {"batch_size": b})
        g = graph(b, True)  # as optimize(memory_budget=...) captures it
        workspace = plan_workspace_bytes(g)
        ok = False
        if memory_bytes > workspace:
            sched, _ = schedule_graph(g, attrs.evolve(settings, memory_budget=memory_bytes - workspace))
            p["recompute_lower_bound_bytes"] = sched.lower_bound_bytes
            if sched.fits_budget:
                placement = place_order(g, sched.order, settings)
                p["recompute_bytes"] = g.persistent_bytes + placement.arena_bytes + workspace
                total = (g.meta.get("flops") or {}).get("total")
                p["recompute_overhead"] = sched.recompute_flops / total if total else None
                ok = p["recompute_bytes"] <= memory_bytes
        progress.say(f"batch {b}: plan with recomputation {'fits' if ok else 'does not fit'}")
        return ok

    eager_b = largest_fitting(fits(eager_probe, "eager_bytes"), limit=limit)
    strongest_b = largest_fitting(fits(eager_probe, "strongest_bytes"), limit=limit)
    optimized_b = largest_fitting(fits(optimized_probe, "optimized_bytes"), limit=limit)
    plan_b = None if measure else largest_fitting(fits(optimized_probe, "plan_bytes"), limit=limit)
    return {
        "model": model, "mode": mode, "optimizer": settings.optimizer, "memory_bytes": memory_bytes,
        **({"autocast": cli_values.AUTOCAST[settings.autocast]} if settings.autocast else {}),
        "limit": limit, "eager_max_batch_size": eager_b, "strongest_baseline_max_batch_size": strongest_b,
        "optimized_max_batch_size": optimized_b,
        "eager_source": ("measured (CUDA, default allocator, fresh process)" if measure
                         else "simulated (live peak: the CPU has no caching allocator)" if settings.device == "cpu"
                         else "simulated (caching allocator, default setting)"),
        "strongest_baseline_source": ("measured (CUDA, expandable segments, fresh process)" if measure else
                                      "simulated (the lesser live peak of program order / optimizer in backward)"
                                      if settings.device == "cpu" else
                                      "simulated (least of program order / optimizer in backward, default / "
                                      "expandable segments)"),
        "optimized_source": ("measured (CUDA, optimize()'s default executor, expandable segments, fresh process)"
                             if measure else "simulated (what optimize() holds: its default executor, fallbacks' "
                                             "results and workspaces included, the better allocator setting)"),
        "plan_max_batch_size": plan_b,
        "plan_source": None if measure else "simulated (plan memory: every buffer in the arena)",
        "gain": (optimized_b / eager_b) if eager_b else None,
        "gain_vs_strongest": (optimized_b / strongest_b) if strongest_b else None,
        **(recompute_result(largest_fitting(recompute_fits, limit=limit), probes) if recompute else {}),
        "probes": [probes[b] for b in sorted(probes)],
    }


def recompute_result(b: int, probes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures of the recomputation search's answer ``b``."""
    return {"recompute_max_batch_size": b,
            "recompute_source": "simulated (plan memory with recomputation under the memory less workspaces)",
            "recompute_overhead": probes[b].get("recompute_overhead") if b else None}
