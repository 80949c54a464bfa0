"""The benchmark pipeline: build, capture, eager baseline, schedule, place, figures.

Each stage is a plain function; :func:`run_bench` chains them for one zoo model and
:func:`analyze_graph` runs everything after capture on any graph. Every answer is
checked here again, independently of the layer that produced it: the order is
validated and re-simulated by the IR simulator, the placement is validated against
the lifetimes of that order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

from model_bench.errors import BenchError, StageUnavailableError
from model_bench.progress import Progress
from model_bench.zoo import ModelCase, build_case
from model_ir import Graph, Lifetime, MemoryProfile, Placement, Plan, Schedule, simulate
from model_ir.cli_values import AUTOCAST
from model_ir.simulator import without_held_gradients
from model_ir.workspaces import ARENA_TEMPORARIES, WORKSPACE_KIND, on_allocator_clock, with_workspaces
from model_runtime.beside_arena import auto_choices, held_by, least_memory_executor, reorder_figures
from model_runtime.eager_allocator import (  # noqa: F401 - the eager baselines' simulation, re-exported
    allocator_steps, eager_step_lifetimes, eager_workspaces, simulate_eager_allocator,
)
from model_place import simulate_training_steps
from model_runtime.planning import budget_graph, device_alignment, make_plan, unbudgeted


#: The devices a step can be captured for.
DEVICES = ("cuda", "cpu")


@attrs.frozen
class BenchSettings:
    """How to optimize: scheduler, placer and solver names, time limit (seconds per solve),
    and the device whose kernels the step is captured with (``cuda``: emulated on a
    machine without a GPU; ``cpu``). ``memory_budget`` (bytes, or None): the peak the
    plan must stay under, recomputing ops when no order alone does (the scheduler
    ``auto`` then runs ``recompute``). ``autocast`` (``bf16``, or None): the forward
    pass and the loss run under ``torch.autocast`` with bfloat16, the AMP recipe
    (``model_ir.cli_values.AUTOCAST``)."""

    scheduler: str = "auto"
    placer: str = "auto"
    solver: str | None = None
    time_limit: float | None = None
    optimizer: str = "sgd"
    granularity: int = 512
    device: str = "cuda"
    memory_budget: int | None = None
    autocast: str | None = None


def autocast_dtype(name: str | None):
    """The torch dtype of an ``AUTOCAST`` name (``model_ir.cli_values``; None for None)."""
    if name is None:
        return None
    import torch

    return getattr(torch, AUTOCAST[name])


@attrs.frozen(eq=False)
class BenchRun:
    """One benchmark run: the flat ``figures`` (JSON-ready) and the objects behind them."""

    figures: Mapping[str, Any]
    graph: Graph
    order: tuple[str, ...]
    eager: MemoryProfile
    optimized: MemoryProfile
    placement: Any
    eager_allocator: Any
    schedule: Any

    def plan(self) -> Plan:
        """The optimized plan (order, placement of the transient buffers, figures)."""
        return Plan(self.graph, Schedule(self.order), Placement(dict(self.placement.offsets),
                                                                self.placement.arena_bytes), dict(self.figures))


def check_settings(settings: BenchSettings) -> BenchSettings:
    """Check the scheduler, placer, solver and optimizer names before any slow work.

    Each layer's own lookup raises the error, which lists what is available.
    """
    from model_bench.optimizers import check_optimizer

    check_optimizer(settings.optimizer)
    try:
        from model_place import placer_names
        from model_sched import scheduler_names, solver_backend
    except ImportError as e:
        raise _missing("optimizing", "model_sched and model_place", e) from None
    from model_ir.errors import PluginError

    for what, name, names in (("scheduler", settings.scheduler, scheduler_names()),
                              ("placer", settings.placer, placer_names())):
        if name not in names:
            raise PluginError(f"unknown {what} {name!r}; available: {', '.join(names)}")
    if settings.solver is not None:
        solver_backend(settings.solver)
    if settings.time_limit is not None and not settings.time_limit > 0:
        raise BenchError(f"time limit must be > 0 seconds, got {settings.time_limit!r}")
    if settings.granularity < 1:
        raise BenchError(f"granularity must be >= 1 byte, got {settings.granularity!r}")
    if settings.device not in DEVICES:
        raise BenchError(f"unknown device {settings.device!r}; choose one of {', '.join(DEVICES)}")
    if settings.memory_budget is not None and settings.memory_budget <= 0:
        raise BenchError(f"memory budget must be > 0 bytes, got {settings.memory_budget!r}")
    if settings.autocast is not None and settings.autocast not in AUTOCAST:
        raise BenchError(f"unknown autocast dtype {settings.autocast!r}; choose {', '.join(AUTOCAST)}")
    return settings


# -- stages ----------------------------------------------------------------------------


def _missing(what: str, module: str, exc: ImportError) -> StageUnavailableError:
    return StageUnavailableError(f"{what} needs {module}, which is not installed or incomplete ({exc})")


def capture_case(case: ModelCase, *, granularity: int = 512, device: str = "cuda",
                 for_recompute: bool = False, autocast: str | None = None) -> Graph:
    """Capture one training (or eval) step of ``case`` as a storage-level graph, with
    ``device``'s kernels and, for CUDA, cuDNN's convolution workspaces as buffers
    (:func:`model_ir.workspaces.with_workspaces`). ``for_recompute``: as ``optimize(memory_budget=...)`` captures
    it, with the forward pass made recomputable (``capture_step(functional_inplace=True)``) and
    what a budget bounds (:func:`model_runtime.planning.budget_graph`: the arena executor's
    temporaries where larger than the kernels', and off CUDA the generator states kept to
    replay a recomputed random op, so eager's figures count them too: a few KiB).
    ``meta["arena_fallbacks"]``: the buffers model-runtime's arena executor leaves to
    PyTorch's allocator on ``device`` (the results of its fallback ops, see
    ``model_runtime.lowering.fallback_buffers``), for :func:`runtime_figures`, and
    ``meta["arena_temporaries"]`` what its rewrites of some ops take instead of their
    kernels (``model_runtime.lowering.arena_temporaries``).
    ``autocast``: an ``AUTOCAST`` name (mixed precision) or None."""
    try:
        from model_ir.torch import capture_step
    except ImportError as e:
        raise _missing("capture", "model_ir.torch (pip install model-ir[torch])", e) from None
    captured = capture_step(case.model, case.inputs, loss_fn=case.loss_fn, optimizer=case.optimizer,
                            train=case.train, targets=() if case.target is None else (case.target,),
                            granularity=granularity, device=device, functional_inplace=for_recompute,
                            autocast=autocast_dtype(autocast))
    graph = captured.graph
    from model_runtime.lowering import arena_temporaries, fallback_buffers  # imports torch, as the capture does

    on = graph.meta.get("device") or device
    meta = {**graph.meta, "arena_fallbacks": sorted(fallback_buffers(captured, on))}
    if temporaries := arena_temporaries(captured, on):
        meta[ARENA_TEMPORARIES] = temporaries
    graph = attrs.evolve(graph, meta=meta)
    # for recomputation, the graph optimize(memory_budget=...) plans: what its executors hold, bounded
    return budget_graph(graph) if for_recompute else with_workspaces(graph)


def capture_model(name: str, mode: str, batch_size: int, *, optimizer: str = "sgd", granularity: int = 512,
                  device: str = "cuda", progress: Progress | None = None, seconds: dict[str, float] | None = None,
                  for_recompute: bool = False, autocast: str | None = None) -> tuple[ModelCase, Graph]:
    """Build zoo model ``name`` and capture its step (see :func:`capture_case`); returns
    the case and the graph."""
    progress = progress or Progress(quiet=True)
    seconds = {} if seconds is None else seconds
    # Imports (torch, torchvision, transformers) take seconds on a cold start and are
    # no part of the model's cost: timed as their own stage, left out of the total.
    with progress.stage("import", seconds):
        import torch
        import torch._dynamo  # noqa: F401  (an optimizer's first use imports it: 5 s cold, in build)

        import model_ir.torch  # noqa: F401  (capture's imports: torch's fake tensors, sympy)
        from model_bench.zoo import get_model

        warm_up = getattr(get_model(name), "warm_up", None)
        if warm_up is not None:
            warm_up()
    with progress.stage("build", seconds):
        case = build_case(name, mode, batch_size, optimizer=optimizer)
    with progress.stage("capture", seconds):
        graph = capture_case(case, granularity=granularity, device=device, for_recompute=for_recompute,
                             autocast=autocast)
        # Name the graph after the zoo entry and record the request, so a saved graph
        # says what it is (``bench --graph`` labels its report with these).
        graph = attrs.evolve(graph, name=name, meta={**graph.meta, "model": name, "mode": mode,
                                                     "batch_size": batch_size, "optimizer": case.optimizer_name})
    return case, graph


def eager_lifetimes(graph: Graph, order=None, *, workspaces: tuple[int, ...] = ()) -> list[Lifetime]:
    """:func:`eager_step_lifetimes` as one list, the kept buffers first, alive throughout."""
    kept, step = eager_step_lifetimes(graph, order, workspaces=workspaces)
    return kept + step


def plan_workspace_bytes(graph: Graph) -> int:
    """The library workspace bytes a planned step of ``graph`` holds (one thread runs every
    op); cuDNN's per-call workspaces are buffers of the graph, in the plan."""
    from model_ir.workspaces import cublas_threads, workspace_bytes

    return workspace_bytes(graph.meta.get("device"), threads=cublas_threads(graph, eager=False))


def holds_live_bytes(graph: Graph) -> bool:
    """Whether PyTorch's allocator on the device ``graph`` was captured for holds only the
    live bytes: the CPU allocator frees each tensor when it dies (no caching allocator,
    no segments, nothing for expandable segments to change), so every baseline there is
    its order's live peak."""
    return graph.meta.get("device") == "cpu"


def reorder_reserved_bytes(graph: Graph, order, *, expandable_segments: bool = False) -> int:
    """What PyTorch's caching allocator reserves running the plan's ``order`` with
    model-runtime's ``reorder`` executor (no arena), simulated in its steady state:
    persistent buffers and the planned step's library workspaces kept, each transient
    buffer freed after its last use. For a graph captured for CUDA this is the runtime's
    own simulation (persistent bytes plus ``reorder_transient_bytes`` of
    :func:`model_runtime.beside_arena.reorder_figures`, the same allocator clock as
    the eager baselines, and the first block the executor starts each step with); for
    others, the caching allocator simulated as for the eager baselines. Against the H200
    (7 models, both settings, measured before the executor had a first block) reserved
    was within 1% with expandable segments (model-bench's docs/simulated-vs-measured.md).
    On the CPU (:func:`holds_live_bytes`), the order's live peak."""
    if holds_live_bytes(graph):
        return simulate(graph, list(order)).peak_bytes
    if graph.meta.get("device") != "cuda":
        kept, step = allocator_steps(graph, order, eager=False)
        return simulate_training_steps(kept, step, expandable_segments=expandable_segments).reserved_bytes
    base = unbudgeted(graph)
    figures = reorder_figures(base, order, device_alignment("cuda"), "cuda", expandable=expandable_segments)
    return base.persistent_bytes + figures["reorder_transient_bytes"]


def runtime_figures(graph: Graph, settings: BenchSettings) -> dict[str, Any]:
    """What ``model_runtime.optimize()`` would hold for this step (bytes, simulated), for
    each allocator setting (``_expandable``: with expandable segments): the executor
    its default ``executor="auto"`` runs (``runtime_executor``; ``runtime_order``: whose
    order, the scheduler's or one of eager's of the same peak, see
    ``model_runtime.planning.least_held_order``) and the persistent
    buffers plus what that executor holds (``runtime_total_bytes``): the arena and what
    lies beside it (the fallbacks' results, outside or copied in, and the libraries'
    workspaces, in PyTorch's allocator), or the reorder or program executor's transient
    memory.
    Unlike the plan (``optimized_total_bytes``, every buffer in the arena), it counts
    what cannot be in the arena, step outputs included. Under a memory budget, the plan
    ``optimize(memory_budget=...)`` makes (``graph`` from :func:`capture_case` with
    ``for_recompute``). Empty for a graph without ``meta["arena_fallbacks"]``
    (:func:`capture_case` records them) and when no plan fits the budget."""
    fallbacks = graph.meta.get("arena_fallbacks")
    if fallbacks is None:
        return {}
    base = unbudgeted(graph)
    device = graph.meta.get("device") or "cpu"
    choices = auto_choices(device, budget=settings.memory_budget is not None)

    def held(expandable: bool) -> tuple[str, str, int] | None:
        f = make_plan(base, device_type=device, unplaced=frozenset(fallbacks), time_limit=settings.time_limit,
                      expandable_segments=expandable, memory_budget=settings.memory_budget).figures
        if not f.get("fits_budget", True):  # optimize() raises BudgetError: it holds nothing
            return None
        executor = least_memory_executor(f, choices)
        return executor, f.get("order_source", "scheduler"), base.persistent_bytes + held_by(f, executor)

    default = held(False)
    expandable = held(True) if device == "cuda" and default is not None else default
    if default is None or expandable is None:
        return {}
    out: dict[str, Any] = {}
    for suffix, (executor, order, total) in (("", default), ("_expandable", expandable)):
        out[f"runtime_executor{suffix}"] = executor
        out[f"runtime_order{suffix}"] = order
        out[f"runtime_total{suffix}_bytes"] = total
    return out


def optimizer_in_backward_order(graph: Graph) -> list[str]:
    """Eager order with the optimizer step fused into backward (PyTorch's recipe; model_sched)."""
    try:
        from model_sched.greedy import optimizer_in_backward_order as order_of, optimizer_ops
        from model_sched.liveness import liveness
    except ImportError as e:
        raise _missing("the optimizer-in-backward baseline", "model_sched", e) from None
    return [graph.ops[v].id for v in order_of(liveness(graph), optimizer_ops(graph))]


#: The eager baselines, each what PyTorch reserves for the step (simulated): the
#: order eager runs, and the caching allocator's setting.
BASELINES = {
    "eager": "program order, caching allocator (default setting)",
    "eager-expandable": "program order, caching allocator with expandable_segments:True",
    "optimizer-in-backward": "optimizer step fused into backward, caching allocator (default setting)",
    "optimizer-in-backward-expandable": "optimizer step fused into backward, expandable_segments:True",
}


def eager_baselines(graph: Graph, eager_allocator=None) -> dict[str, Any]:
    """Figures of every eager baseline (bytes), and the strongest (least reserved) of them.
    On the CPU (:func:`holds_live_bytes`) each baseline holds its order's live peak.

    ``eager_allocator``: :func:`simulate_eager_allocator` of ``graph`` if the caller has it
    already (it is the first baseline)."""
    fused = optimizer_in_backward_order(graph)
    fused_graph = without_held_gradients(graph)  # each hook sets p.grad = None after its update
    fused_profile = simulate(fused_graph, fused, eager=True)
    if holds_live_bytes(graph):
        eager_peak = simulate(graph, eager=True).peak_bytes
        reserved = {"eager": eager_peak, "eager-expandable": eager_peak,
                    "optimizer-in-backward": fused_profile.peak_bytes,
                    "optimizer-in-backward-expandable": fused_profile.peak_bytes}
    else:
        program, fused_steps = allocator_steps(graph), allocator_steps(fused_graph, fused)
        if eager_allocator is None:
            eager_allocator = simulate_training_steps(*program)
        reserved = {
            "eager": eager_allocator.reserved_bytes,
            "eager-expandable": simulate_training_steps(*program, expandable_segments=True).reserved_bytes,
            "optimizer-in-backward": simulate_training_steps(*fused_steps).reserved_bytes,
            "optimizer-in-backward-expandable":
                simulate_training_steps(*fused_steps, expandable_segments=True).reserved_bytes,
        }
    strongest = min(reserved, key=lambda k: (reserved[k], list(BASELINES).index(k)))
    return {
        "eager_reserved_expandable_bytes": reserved["eager-expandable"],
        "optimizer_in_backward_peak_bytes": fused_profile.peak_bytes,
        "optimizer_in_backward_reserved_bytes": reserved["optimizer-in-backward"],
        "optimizer_in_backward_reserved_expandable_bytes": reserved["optimizer-in-backward-expandable"],
        "strongest_baseline": strongest,
        "strongest_baseline_bytes": reserved[strongest],
    }


def schedule_graph(graph: Graph, settings: BenchSettings, progress: Progress | None = None):
    """Run the scheduler; the order is validated and its peak re-simulated here."""
    try:
        from model_sched import schedule
    except ImportError as e:
        raise _missing("scheduling", "model_sched", e) from None
    report = None
    if progress is not None and not progress.quiet:
        def report(p):
            progress.say(f"  {p.stage}: best {_gib(p.best_peak_bytes)}, bound {_gib(p.lower_bound_bytes)} "
                         f"({p.seconds:.1f} s)")
    result = schedule(graph, method=settings.scheduler, solver=settings.solver, time_limit=settings.time_limit,
                      progress=report, memory_budget=settings.memory_budget)
    profile = simulate(graph, list(result.order))  # validates the order
    if profile.peak_bytes != result.peak_bytes:
        raise BenchError(f"scheduler {settings.scheduler!r} reported a peak of {result.peak_bytes} bytes but its "
                         f"order peaks at {profile.peak_bytes} bytes in the simulator")
    if result.lower_bound_bytes > profile.peak_bytes:
        raise BenchError(f"scheduler {settings.scheduler!r} reported a lower bound above its own answer")
    return result, profile


def place_order(graph: Graph, order, settings: BenchSettings, *, time_limit: float | None = None):
    """Place the transient buffers of ``graph`` run in ``order``; validated here again.
    ``time_limit``: seconds for the placer (default: the settings')."""
    try:
        from model_place import lifetimes_from_graph, place, validate_placement
    except ImportError as e:
        raise _missing("placement", "model_place", e) from None
    lifetimes = lifetimes_from_graph(graph, list(order))
    result = place(lifetimes, method=settings.placer,
                   time_limit=settings.time_limit if time_limit is None else time_limit)
    validate_placement(lifetimes, result.offsets, result.arena_bytes)
    return result


def place_schedule(graph: Graph, sched, optimized: MemoryProfile, settings: BenchSettings):
    """Place the scheduled order, or another order of the same peak that packs better
    (:func:`model_runtime.planning.place_scheduled`): ``(order, its profile, placement)``."""
    try:
        from model_place.exact import DEFAULT_TIME_LIMIT
        from model_runtime.planning import place_scheduled
    except ImportError as e:
        raise _missing("placement", "model_place, model_sched and model_runtime", e) from None
    limit = settings.time_limit if settings.time_limit is not None else DEFAULT_TIME_LIMIT
    order, placement = place_scheduled(
        graph, sched, lambda o, seconds: place_order(graph, o, settings, time_limit=seconds), limit)
    return order, (optimized if list(order) == list(sched.order) else simulate(graph, list(order))), placement


# -- the whole run ---------------------------------------------------------------------


def _ratio(part: float, whole: float) -> float | None:
    return None if not whole else part / whole


def _saving(plan: int, baseline: int) -> float:
    return 1 - plan / baseline if baseline else 0.0


def analyze_graph(graph: Graph, settings: BenchSettings = BenchSettings(), *, progress: Progress | None = None,
                  seconds: dict[str, float] | None = None, extra: Mapping[str, Any] | None = None) -> BenchRun:
    """Eager baseline, optimized order and placement of ``graph``, with every figure in bytes.

    ``seconds`` (stage name to seconds) is filled in and copied into the figures;
    ``extra`` figures (model name, mode, ...) come first in the result.
    """
    progress = progress or Progress(quiet=True)
    seconds = {} if seconds is None else seconds
    with progress.stage("eager", seconds):
        eager = simulate(graph, eager=True)
        allocator = simulate_eager_allocator(graph)
        transient_allocator = simulate_training_steps((), on_allocator_clock(graph, eager.lifetimes))
        baselines = eager_baselines(graph, allocator)
    cached = "" if holds_live_bytes(graph) else f", reserved (caching allocator) {_gib(allocator.reserved_bytes)}"
    progress.say(f"  eager peak {_gib(eager.peak_bytes)}{cached}; strongest baseline "
                 f"{baselines['strongest_baseline']} {_gib(baselines['strongest_baseline_bytes'])}")
    with progress.stage("schedule", seconds):
        sched, optimized = schedule_graph(graph, settings, progress)
    progress.say(f"  optimized peak {_gib(optimized.peak_bytes)}, lower bound {_gib(sched.lower_bound_bytes)}")
    with progress.stage("place", seconds):
        order, optimized, placement = place_schedule(graph, sched, optimized, settings)
    progress.say(f"  arena {_gib(placement.arena_bytes)} for a transient peak of "
                 f"{_gib(optimized.transient_peak_bytes)}")
    with progress.stage("reorder", seconds):
        reorder = {setting: reorder_reserved_bytes(graph, order, expandable_segments=setting)
                   for setting in (False, True)}
    with progress.stage("runtime", seconds):
        # Ctrl-C stopped the scheduler (its best order is kept): no further solving for this run
        runtime = {} if sched.interrupted else runtime_figures(graph, settings)
    persistent = graph.persistent_bytes
    workspace = plan_workspace_bytes(graph)
    live = holds_live_bytes(graph)  # the CPU: eager holds its live peak, no caching allocator
    reserved = eager.peak_bytes if live else allocator.reserved_bytes
    total = persistent + placement.arena_bytes + workspace
    # The order's lower bound holds for every order, hence for every plan; the
    # placement's bound only for this order. So "order plus placement" is bounded by
    # the order's bound (persistent bytes included), plus the workspace any plan needs.
    lower = sched.lower_bound_bytes
    plan_lower = lower + workspace
    figures: dict[str, Any] = dict(extra or {})
    figures.update({
        "scheduler": settings.scheduler,
        "placer": settings.placer,
        "solver": settings.solver,
        "time_limit": settings.time_limit,
        "ops": len(graph.ops),
        "buffers": len(graph.buffers),
        "device": graph.meta.get("device"),
        "kernels": graph.meta.get("kernels"),
        "cpu_threads_measured": graph.meta.get("cpu_threads_measured"),
        "persistent_bytes": persistent,
        "workspace_bytes": workspace,
        "conv_workspace_bytes": sum(b.size for b in graph.buffers if b.kind == WORKSPACE_KIND),
        "eager_workspace_bytes": sum(eager_workspaces(graph)),
        "eager_peak_bytes": eager.peak_bytes,
        "eager_transient_peak_bytes": eager.transient_peak_bytes,
        "eager_reserved_bytes": reserved,
        "eager_allocated_peak_bytes": eager.peak_bytes if live else allocator.allocated_peak_bytes,
        "eager_transient_reserved_bytes": eager.transient_peak_bytes if live else transient_allocator.reserved_bytes,
        "eager_segments": None if live else len(allocator.segments),
        **baselines,
        "optimized_peak_bytes": optimized.peak_bytes,
        "optimized_transient_peak_bytes": optimized.transient_peak_bytes,
        "peak_saving": 1 - _ratio(optimized.peak_bytes, eager.peak_bytes) if eager.peak_bytes else 0.0,
        "lower_bound_bytes": lower,
        "schedule_method": sched.method,
        "schedule_source": sched.source,
        "schedule_interrupted": bool(sched.interrupted),
        "schedule_gap": sched.gap,
        "schedule_optimal": bool(sched.optimal),
        "arena_bytes": placement.arena_bytes,
        "placement_method": placement.method,
        "placement_lower_bound_bytes": placement.lower_bound_bytes,
        "placement_gap": placement.gap,
        "placement_optimal": bool(placement.optimal),
        "fragmentation": (placement.arena_bytes / optimized.transient_peak_bytes - 1
                          if optimized.transient_peak_bytes else 0.0),
        "optimized_total_bytes": total,
        "reorder_reserved_bytes": reorder[False],
        "reorder_reserved_expandable_bytes": reorder[True],
        **runtime,
        "saving_vs_reserved": _saving(total, reserved),
        "best_possible_saving_vs_reserved": _saving(plan_lower, reserved),
        "saving_vs_expandable": _saving(total, baselines["eager_reserved_expandable_bytes"]),
        "saving_vs_strongest": _saving(total, baselines["strongest_baseline_bytes"]),
        "best_possible_saving_vs_strongest": _saving(plan_lower, baselines["strongest_baseline_bytes"]),
    })
    if runtime:
        figures["runtime_saving_vs_strongest"] = _saving(
            min(runtime["runtime_total_bytes"], runtime["runtime_total_expandable_bytes"]),
            baselines["strongest_baseline_bytes"])
    if settings.memory_budget is not None:
        figures.update(budget_figures(graph, sched))
    seconds["total"] = sum(v for k, v in seconds.items() if k not in ("total", "import"))
    figures["stage_seconds"] = {k: round(v, 4) for k, v in seconds.items()}
    figures["seconds"] = round(seconds["total"], 4)
    return BenchRun(figures, graph, order, eager, optimized, placement, allocator, sched)


def budget_figures(graph: Graph, sched) -> dict[str, Any]:
    """What planning under a memory budget cost (bytes, FLOPs from the capture's
    ``torch.utils.flop_counter`` counts): the budget, whether the plan fits it, the
    recomputed ops and FLOPs, those FLOPs per FLOP of the step and of its forward
    pass, the FLOPs no plan fitting the budget goes below (None when not computed), the
    bytes no order without recomputation goes below, and the runs per op within which
    no plan fits (None unless the exact model proved it)."""
    flops = graph.meta.get("flops") or {}
    return {
        "memory_budget": sched.memory_budget,
        "fits_budget": bool(sched.fits_budget),
        "recomputed_ops": sched.recomputed_ops,
        "recompute_flops": sched.recompute_flops,
        "recompute_overhead": _ratio(sched.recompute_flops, flops.get("total", 0)),
        "recompute_forward_ratio": _ratio(sched.recompute_flops, flops.get("forward", 0)),
        "recompute_flops_lower_bound": sched.recompute_flops_lower_bound,
        "reorder_lower_bound_bytes": sched.reorder_lower_bound_bytes,
        "no_fit_within_runs": sched.no_fit_within_runs,
        "step_flops": flops.get("total"),
    }


def run_bench(model: str, mode: str = "train", batch_size: int = 1, settings: BenchSettings = BenchSettings(),
              *, progress: Progress | None = None) -> BenchRun:
    """Benchmark zoo model ``model``: build, capture, then :func:`analyze_graph`."""
    check_settings(settings)
    progress = progress or Progress(quiet=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    case, graph = capture_model(model, mode, batch_size, optimizer=settings.optimizer,
                                granularity=settings.granularity, device=settings.device, progress=progress,
                                seconds=seconds, for_recompute=settings.memory_budget is not None,
                                autocast=settings.autocast)
    progress.say(f"  {len(graph.ops)} ops, {len(graph.buffers)} buffers, {case.parameter_count:,} parameters")
    extra = {"model": model, "mode": mode, "batch_size": batch_size,
             "optimizer": case.optimizer_name, "parameters": case.parameter_count,
             **({"autocast": AUTOCAST[settings.autocast]} if settings.autocast else {})}
    run = analyze_graph(graph, settings, progress=progress, seconds=seconds, extra=extra)
    progress.say(f"total {time.perf_counter() - t0:.2f} s")
    return run


def _gib(n: int) -> str:
    # The report's format, so that one run prints its figures one way.
    from model_bench.reports import fmt_bytes

    return fmt_bytes(n)
