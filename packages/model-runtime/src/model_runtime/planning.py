"""Making the plan of a captured step: order (model_sched), addresses (model_place), figures."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import attrs

from model_ir import Buffer, Lifetime, ModelOptError, Plan, Schedule, simulate, validate_order
from model_ir.plan import order_indices
from model_ir.recompute import REPLAYS_DRAWS_OF, REPLAYS_RNG, recompute_flops
from model_ir.workspaces import ARENA_TEMPORARIES, with_workspaces, without_workspaces
from model_place import lifetimes_from_graph, live_bytes_peak, place, validate_placement
from model_runtime.beside_arena import (
    caching_allocator_bytes, fallback_copies, fallback_cost, fallback_figures, fallback_groups, instance_owners_of,
    program_figures, reorder_figures,
)
from model_runtime.eager_allocator import simulate_eager_allocator
from model_runtime.errors import ReoptimizeError, RuntimeLayerError
from model_sched import forced_bound, liveness, schedule
from model_sched.api import recompute_bound

#: Seconds each solver (scheduling, placement) may run when ``time_limit`` is None.
DEFAULT_TIME_LIMIT = 10.0

#: Share of the placement time the scheduled order gets when an order of the same peak
#: waits to be placed after it (see :func:`place_scheduled`).
FIRST_PLACEMENT_SHARE = 0.75
#: Seconds (at most, and at most 2% of the placement time) to look for that other order.
OTHER_ORDER_SECONDS = 1.0
#: Seconds a placement gets at least when the search for that other order overran.
MIN_PLACEMENT_SECONDS = 0.1


def device_alignment(device_type: str) -> int:
    """Bytes every buffer is aligned to and rounded up to: 512 on CUDA (the caching
    allocator's block size), 64 elsewhere (the CPU allocator's alignment)."""
    return 512 if device_type == "cuda" else 64


def arena_lifetimes(graph, order, alignment: int, unplaced=frozenset(), *, eager: bool = False
                    ) -> tuple[Lifetime, ...]:
    """Lifetimes of the buffers the arena holds (transient, not a step output, not in
    ``unplaced``), each aligned to ``alignment`` bytes; a recomputed buffer has one per
    instance (``b``, ``b@2``, ...). ``eager``: as eager PyTorch frees them (the eager
    baseline's lifetimes, see :func:`model_ir.simulate`)."""
    outside = {b.id for b in graph.buffers if b.output} | set(unplaced)
    owner = instance_owners_of(graph, order)
    return tuple(lt for lt in lifetimes_from_graph(graph, order, alignment=alignment, eager=eager)
                 if owner.get(lt.id, lt.id) not in outside)


def place_scheduled(graph, sched, place_order: Callable[[Sequence[str], float], object],
                    time_limit: float, order: Sequence[str] | None = None) -> tuple[tuple[str, ...], object]:
    """Place the scheduled order, or another order of the same peak that packs better:
    ``(order, placement)``. ``place_order(order, seconds)`` places the buffers of ``graph``
    run in ``order`` (a :class:`model_place.PlacementResult`); ``time_limit``: seconds
    for the whole placement.

    Orders of the same peak pack differently: on transformer-small's training step the
    exact search's optimal order leaves the arena 2.4% above its transient peak after
    60 s of placement, while the windows' order of the same peak packs at it in 0.1 s.
    So ``lns`` first gets a moment (:data:`OTHER_ORDER_SECONDS`) to find another order
    of the same peak. Without one, the scheduled order gets the whole placement time;
    with one, it gets :data:`FIRST_PLACEMENT_SHARE` of it and, when it does not pack at
    its bound, the other order is placed in the rest; the smaller arena wins. Not with a
    memory budget (recomputation) nor when the scheduler was ``lns`` itself. ``order``:
    one of the scheduled peak chosen for the executors (:func:`least_held_order`),
    placed as it is when it is not the scheduler's.
    """
    if order is not None and tuple(order) != tuple(sched.order):
        return tuple(order), place_order(tuple(order), time_limit)
    order = tuple(sched.order)
    if sched.memory_budget is not None or sched.method == "lns":
        return order, place_order(order, time_limit)
    start = time.perf_counter()

    def left() -> float:
        # the search may overrun its share (a slow machine): never a negative limit
        return max(MIN_PLACEMENT_SECONDS, time_limit - (time.perf_counter() - start))

    found = schedule(graph, method="lns", time_limit=min(OTHER_ORDER_SECONDS, 0.02 * time_limit))
    other = tuple(found.order)
    if other == order or found.peak_bytes != sched.peak_bytes:
        return order, place_order(order, left())
    placement = place_order(order, time_limit * FIRST_PLACEMENT_SHARE)
    if placement.optimal:
        return order, placement
    again = place_order(other, left())
    return (other, again) if again.arena_bytes < placement.arena_bytes else (order, placement)


#: The buffer of the generator states :func:`budget_graph` adds.
RNG_STATES = "rng_states"


def budget_graph(graph):
    """The graph a plan under a memory budget is scheduled and checked on: ``graph`` with
    what each call takes for its duration beside the step's buffers (the CPU kernels'
    temporaries, CUDA's per-call library workspaces, and the arena executor's own
    temporaries where larger: ``meta[ARENA_TEMPORARIES]``) as one more output of its op
    (:func:`model_ir.workspaces.with_workspaces`), so that the peak the budget bounds is
    what the executors hold, every run of a recomputed op holding its own. Off CUDA, the
    generator states an executor keeps to replay a recomputed random op's draws
    (``beside_arena.rng_state_lifetimes``: at most one per such op and one swapped out)
    are held throughout, as one persistent buffer ``rng_states`` (their bound: which
    are kept depends on the order). The op ids are the same: its orders are ``graph``'s."""
    planned = with_workspaces(graph, graph.meta.get(ARENA_TEMPORARIES))
    replayed = {op.id for op in graph.ops if op.meta.get(REPLAYS_RNG)}
    replayed |= {op.meta[REPLAYS_DRAWS_OF] for op in graph.ops if REPLAYS_DRAWS_OF in op.meta}
    if not replayed or graph.meta.get("device") == "cuda":  # a CUDA generator's state is host memory
        return planned
    import torch  # here: the CLI loads this module without torch

    size = (len(replayed) + 1) * torch.default_generator.get_state().nbytes
    return attrs.evolve(planned, buffers=[*planned.buffers, Buffer(RNG_STATES, size, persistent=True)])


def unbudgeted(graph):
    """``graph`` as :func:`make_plan` takes it: without what :func:`budget_graph` (or
    :func:`model_ir.workspaces.with_workspaces`) added, the executors' figures counting
    those themselves (``model_runtime.beside_arena``)."""
    graph = without_workspaces(graph)
    if RNG_STATES not in graph.buffer_index:
        return graph
    return attrs.evolve(graph, buffers=[b for b in graph.buffers if b.id != RNG_STATES])


#: How :func:`make_plan` may hold the fallbacks' results (see :func:`fallback_figures`).
FALLBACK_RESULTS = ("auto", "outside", "copied")


def check_fallback_results(value) -> None:
    """Raise :class:`RuntimeLayerError` unless ``value`` is one of :data:`FALLBACK_RESULTS`."""
    if value not in FALLBACK_RESULTS:
        raise RuntimeLayerError(f"fallback_results must be one of {', '.join(FALLBACK_RESULTS)}, got {value!r}")


#: The executors whose memory picks the plan's order among those of the optimal peak
#: (:func:`least_held_order`); the program executor runs eager's order whatever the plan's.
ORDER_EXECUTORS = ("arena", "reorder")


def copied_fallbacks(mode: str, graph, order, alignment: int, unplaced, device_type: str, *,
                     expandable: bool = False) -> frozenset[str]:
    """The fallback results (of ``unplaced``) the arena executor copies into the arena
    when ``fallback_results`` is ``mode`` (see :func:`make_plan`). Results kept in host
    memory (``meta["host"]``: 0 device bytes) are never copied."""
    unplaced = frozenset(b for b in unplaced if not graph.buffer(b).meta.get("host"))
    if mode == "outside" or not unplaced:
        return frozenset()
    if mode == "copied":
        return frozenset(unplaced)
    return fallback_copies(graph, order, alignment, unplaced, device_type, expandable=expandable)


def order_candidates(graph) -> list[tuple[str, tuple[str, ...]]]:
    """Orders a plan may run besides the scheduler's, named: eager's program order and,
    when the step has an optimizer, that order with each update moved up to where its
    gradient is complete (PyTorch's optimizer-in-backward recipe, see
    :func:`model_sched.greedy.optimizer_in_backward_order`)."""
    from model_sched.greedy import optimizer_in_backward_order, optimizer_ops

    program = tuple(op.id for op in graph.ops)
    found = [("program", program)]
    updates = optimizer_ops(graph)
    if any(updates):
        lv = liveness(graph)
        found.append(("optimizer-in-backward",
                      tuple(graph.ops[v].id for v in optimizer_in_backward_order(lv, updates))))
    return found


def least_held_order(graph, sched, alignment: int, unplaced, device_type: str, *, executors=ORDER_EXECUTORS,
                     fallback_results: str = "auto", expandable: bool = False
                     ) -> tuple[tuple[str, ...], str, frozenset[str] | None]:
    """``(order, source, copied)``: of the scheduler's order and the candidates of
    :func:`order_candidates` that peak as low (the plan's peak, and its proof, stay
    the same), the one whose ``executors`` hold the least memory beside the persistent
    buffers, by the simulation the figures use: an arena at its bound (the peak of its
    live bytes) plus what lies beside it (:func:`fallback_cost`), or the reorder
    executor's transient memory; the scheduler's on a tie (``source`` ``"scheduler"``).
    ``copied``: the fallback results the arena executor copies in that order
    (:func:`copied_fallbacks`) when it was worked out here, else None.

    Orders of one peak fragment PyTorch's allocator differently, and what an arena
    cannot hold (the fallbacks' results) lives beside it at other times: on gpt2's
    training step at batch 1 (CUDA, expandable segments) the optimal order found first
    holds 954 MiB beside the persistent buffers in its arena and 1029 MiB run by the
    reorder executor; the optimizer-in-backward order, as low a peak, 869 MiB (reorder).
    Not under a memory budget (the orders recompute) nor without ``executors``. Costs
    one :func:`copied_fallbacks` search and one reorder simulation per order compared (on
    CUDA, caching-allocator replays: opt-350m's training step at batch 32, three orders,
    1.8 s; on the CPU, live peaks only)."""
    order = tuple(sched.order)
    if sched.memory_budget is not None or not executors:
        return order, "scheduler", None
    others = [(name, o) for name, o in order_candidates(graph)
              if o != order and simulate(graph, o).peak_bytes == sched.peak_bytes]
    if not others:
        return order, "scheduler", None

    def held(o) -> tuple[int, frozenset[str] | None]:
        costs, copied = [], None
        if "arena" in executors:
            copied = copied_fallbacks(fallback_results, graph, o, alignment, unplaced, device_type,
                                      expandable=expandable)
            costs.append(fallback_cost(graph, o, alignment, unplaced, copied, device_type, expandable=expandable))
        if "reorder" in executors:
            costs.append(reorder_figures(graph, o, alignment, device_type,
                                         expandable=expandable)["reorder_transient_bytes"])
        return min(costs), copied

    best = None
    for rank, (name, o) in enumerate([("scheduler", order), *others]):
        cost, copied = held(o)
        if best is None or (cost, rank) < best[0]:
            best = (cost, rank), o, name, copied
    return best[1:]


def make_plan(graph, *, device_type: str = "cpu", placement: bool = True, time_limit: float | None = None,
              schedule_method: str = "auto", place_method: str = "auto", unplaced=frozenset(),
              memory_budget: int | None = None, fallback_results: str = "auto",
              expandable_segments: bool = False, executors: Sequence[str] = ORDER_EXECUTORS) -> Plan:
    """Schedule ``graph``, place its arena buffers (when ``placement``) and gather the figures.

    ``time_limit`` (seconds) applies to each solver separately (default
    :data:`DEFAULT_TIME_LIMIT`). Figures (bytes, seconds): ``peak_bytes`` and
    ``eager_peak_bytes`` (persistent included), ``lower_bound_bytes``, ``schedule_gap``,
    ``persistent_bytes``, ``arena_bytes``, ``arena_lower_bound_bytes``,
    ``eager_caching_allocator_bytes`` (what PyTorch's caching allocator would reserve
    for the same buffers in program order, simulated), ``output_bytes`` (step outputs,
    allocated outside the arena), ``schedule_seconds``, ``place_seconds``,
    ``reorder_transient_bytes`` and ``reorder_warm_block_bytes`` (what the ``reorder``
    executor takes from PyTorch's allocator, :func:`reorder_figures`), on CUDA
    ``eager_reserved_bytes`` (what eager PyTorch's caching allocator reserves for the
    step, persistent buffers included, simulated the same way:
    :func:`model_runtime.eager_allocator.simulate_eager_allocator`); with
    ``unplaced`` (the results of the ops the executor runs as fallbacks, which PyTorch's
    allocator makes): ``fallback_results`` says whether they stay ``"outside"`` the arena
    or are ``"copied"`` into it right after their op (then placed like any buffer);
    ``"auto"`` copies those :func:`fallback_copies` picks. The figures then add those of
    :func:`fallback_figures`.
    ``memory_budget`` (bytes): the
    order may recompute ops to keep its peak under it (see :func:`model_sched.schedule`);
    the figures then add ``memory_budget``, ``fits_budget``, ``recomputed_ops``,
    ``recompute_flops``, ``recompute_overhead`` (recomputed FLOPs per FLOP of the
    step), ``reorder_lower_bound_bytes`` and ``no_fit_within_runs`` (see
    :class:`model_sched.ScheduleResult`), and ``lower_bound_bytes`` is the bound of any
    plan with recomputation.
    ``expandable_segments`` (CUDA): what lies in PyTorch's caching allocator is simulated
    with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (figure
    ``expandable_segments``), as the step will run.
    ``executors``: those that may run the plan (of :data:`ORDER_EXECUTORS`; the arena
    only when ``placement``): among the orders of the scheduled peak, the plan keeps the
    one they hold least memory with (:func:`least_held_order`; figure ``order_source``).
    """
    check_fallback_results(fallback_results)
    expandable = expandable_segments and device_type == "cuda"
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    # Under a budget the scheduler (and its recomputation search) sees the kernels' temporaries.
    planned = graph if memory_budget is None else budget_graph(graph)
    sched = schedule(planned, method=schedule_method, time_limit=limit, memory_budget=memory_budget)
    if sched.interrupted:  # the scheduler turned Ctrl-C into "best so far": the caller asked to stop
        raise KeyboardInterrupt
    alignment = device_alignment(device_type)
    result = None
    place_start = time.perf_counter()

    executors = tuple(e for e in executors if e in ORDER_EXECUTORS and (placement or e != "arena"))
    order, source, copied = least_held_order(graph, sched, alignment, unplaced, device_type, executors=executors,
                                             fallback_results=fallback_results, expandable=expandable)
    if not placement:
        copied = frozenset()
    else:
        if copied is None:
            copied = copied_fallbacks(fallback_results, graph, order, alignment, unplaced, device_type,
                                      expandable=expandable)
        leave_out = frozenset(unplaced) - copied
        order, result = place_scheduled(
            graph, sched, lambda o, seconds: place(arena_lifetimes(graph, o, alignment, leave_out),
                                                   method=place_method, time_limit=seconds), limit, order)
    figures = simulated_figures(graph, order, None, alignment, device_type=device_type,
                                expandable_segments=expandable, planned=planned)
    # The simulator is the reference: the order's peak is recomputed, never trusted.
    if figures["peak_bytes"] != sched.peak_bytes:
        raise RuntimeLayerError(f"internal error: the scheduler reports a peak of {sched.peak_bytes} bytes, "
                                f"the simulator measures {figures['peak_bytes']} bytes for its order")
    figures.update({
        "lower_bound_bytes": sched.lower_bound_bytes,
        "schedule_gap": sched.gap,
        "schedule_optimal": sched.optimal,
        "schedule_seconds": sched.seconds,
        "schedule_source": sched.source,
        "order_source": source,
    })
    if memory_budget is not None:
        figures.update(_budget_figures(graph, memory_budget, sched.fits_budget, sched.recomputed_ops,
                                      sched.recompute_flops),
                       reorder_lower_bound_bytes=sched.reorder_lower_bound_bytes,
                       no_fit_within_runs=sched.no_fit_within_runs)
    placed = None
    if result is not None:
        figures.update(fallback_figures(graph, order, alignment, unplaced, copied, device_type,
                                        expandable=expandable))
        eager_lts = arena_lifetimes(graph, None, alignment, eager=True)
        placed = result.placement()
        figures.update({
            "arena_bytes": result.arena_bytes,
            "arena_lower_bound_bytes": result.lower_bound_bytes,
            "placement_status": result.status,
            "place_seconds": time.perf_counter() - place_start,  # every order placed, not only the kept one
            "place_method": result.method,
            "eager_caching_allocator_bytes": caching_allocator_bytes(eager_lts, expandable=expandable),
            "eager_transient_live_peak_bytes": live_bytes_peak(eager_lts),
        })
    return Plan(graph, Schedule(order), placed, figures)


def _structure(graph) -> tuple:
    buffers = tuple((b.id, b.size, b.persistent, b.output) for b in graph.buffers)
    ops = tuple((o.id, tuple(o.inputs), tuple(o.outputs), tuple(o.mutates), tuple(o.after)) for o in graph.ops)
    return buffers, ops


def _first_difference(saved, graph) -> str:
    """Where ``saved`` (a plan's graph) first differs from ``graph`` (the step now), in words."""
    (saved_buffers, saved_ops), (buffers, ops) = _structure(saved), _structure(graph)
    for a, b in zip(saved_buffers, buffers):
        if a != b:
            if a[0] != b[0]:
                return f"its buffer {a[0]!r} is {b[0]!r} in this step"
            what = ", ".join(f"{name} {x}{unit} in the plan, {y}{unit} now" for name, unit, x, y in
                             zip(("size", "persistent", "output"), (" B", "", ""), a[1:], b[1:]) if x != y)
            return f"buffer {a[0]!r}: {what}"
    if len(saved_buffers) != len(buffers) or len(saved_ops) != len(ops):
        return (f"{len(saved.ops)} ops and {len(saved.buffers)} buffers; this step has {len(graph.ops)} ops and "
                f"{len(graph.buffers)} buffers")
    a, b = next((a, b) for a, b in zip(saved_ops, ops) if a != b)
    return f"its op {a[0]!r} reads or writes other buffers than op {b[0]!r} of this step"


def check_saved_plan(plan: Plan, graph, *, needs_placement: bool, alignment: int, unplaced=frozenset(),
                     device_type: str = "cpu", copies_unplaced: bool = True,
                     expandable_segments: bool = False, memory_budget: int | None = None) -> Plan:
    """``plan`` re-targeted to ``graph`` (the step captured now), after checking that
    it was made for the same step and that its order (and placement, when
    ``needs_placement``) are valid for it. Raises :class:`ReoptimizeError` otherwise.
    ``unplaced``: the executor's fallback results; with ``copies_unplaced``, those of
    an op the placement places are copied into the arena (see :func:`make_plan`, also
    for ``expandable_segments``). With ``memory_budget``, the figures say whether its
    peak fits it (``fits_budget``) and what its recomputations cost."""
    if _structure(plan.graph) != _structure(graph):
        raise ReoptimizeError(
            f"the saved plan was made for another step ({_first_difference(plan.graph, graph)}): the model, batch "
            "shape, optimizer, autocast or granularity differ; make a new plan (without plan= or --plan)"
        )
    validate_order(graph, order_indices(graph, plan.schedule))
    if needs_placement and plan.placement is None:
        raise ReoptimizeError("the saved plan has no placement, which this executor needs; "
                              "make a plan without plan= (or --plan)")
    placement = plan.placement
    # The fallbacks the placement places (all of an op's results) are copied into the arena.
    placed = set(placement.offsets) if placement is not None and copies_unplaced else set()
    copied = frozenset(b for bs in fallback_groups(graph, unplaced).values() if bs <= placed for b in bs)
    lts = arena_lifetimes(graph, plan.schedule, alignment, frozenset(unplaced) - copied)
    if placement is not None:
        try:
            check_saved_placement(lts, placement, alignment)
        except ReoptimizeError:
            if needs_placement:
                raise
            placement = None  # this executor does not use it: dropped, not reported
    # The saved figures are not trusted (the file may come from another tool, or have
    # been edited): every figure is recomputed from the graph, the order and the offsets.
    planned = graph if memory_budget is None else budget_graph(graph)
    figures = {**simulated_figures(graph, plan.schedule, placement, alignment, unplaced, copied=copied,
                                   device_type=device_type, expandable_segments=expandable_segments,
                                   planned=planned),
               **bound_figures(planned, plan.schedule, lts if placement is not None else None)}
    if memory_budget is not None:
        figures.update(_budget_figures(graph, memory_budget, figures["peak_bytes"] <= memory_budget,
                                      figures.get("recomputed_ops", 0), figures.get("recompute_flops", 0)))
    return Plan(graph, plan.schedule, placement, figures)


def _budget_figures(graph, memory_budget: int, fits: bool, recomputed_ops: int, flops: int) -> dict:
    """A plan's figures under ``memory_budget``: whether it fits, its recomputations and
    their FLOPs per FLOP of the step (None when the capture counted none)."""
    total = graph.meta.get("flops", {}).get("total", 0)
    return {"memory_budget": memory_budget, "fits_budget": fits, "recomputed_ops": recomputed_ops,
            "recompute_flops": flops, "recompute_overhead": flops / total if total else None}


def check_saved_placement(lts, placement, alignment: int) -> None:
    """Raise :class:`ReoptimizeError` unless ``placement`` is a valid placement of the
    arena lifetimes ``lts`` on a device aligning to ``alignment`` bytes, in an arena no
    larger than every buffer side by side (a larger one is a damaged or edited file,
    and would ask the device for absurd amounts of memory)."""
    extra = sorted(set(placement.offsets) - {lt.id for lt in lts})
    if extra:  # placement checks say "unknown buffer" of a buffer the graph has
        raise ReoptimizeError(f"the saved plan places buffer {extra[0]!r}, which this step keeps outside its arena "
                              "(or which is not of this step): a placement of every buffer, as `model-opt place` "
                              "writes, is not a plan the runtime reuses; reuse one saved with `model-opt run "
                              "--save-plan` or model_ir.save_plan(step.plan), or plan anew")
    try:
        validate_placement(lts, placement.offsets, placement.arena_bytes)
    except ModelOptError as exc:
        raise ReoptimizeError(f"the saved plan's placement is not valid for this step: {exc}") from None
    misaligned = [lt.id for lt in lts if placement.offsets[lt.id] % alignment]
    if misaligned:
        raise ReoptimizeError(f"the saved plan places buffer {misaligned[0]!r} at an offset that is not a "
                              f"multiple of {alignment} bytes, as this device needs")
    side_by_side = sum(lt.size + lt.alignment for lt in lts)
    if placement.arena_bytes > side_by_side:
        raise ReoptimizeError(f"the saved plan's arena of {placement.arena_bytes} bytes is larger than its "
                              f"{len(lts)} buffers side by side ({side_by_side} bytes); optimize without "
                              "plan= to make a new plan")


def bound_figures(graph, order, lts=None) -> dict:
    """Lower bounds recomputed for a saved plan (bytes): the forced-liveness bound on
    the peak of every order, its gap to ``order``'s peak, and with arena lifetimes
    ``lts`` the peak of their live bytes, a bound on the arena."""
    peak = simulate(graph, order).peak_bytes
    idx = order_indices(graph, order)
    recomputes = len(idx) > len(graph.ops)
    # Recomputation can go below the forced-liveness bound of plain orders, never below the working sets.
    bound = recompute_bound(graph) if recomputes else forced_bound(liveness(graph)).bytes
    figures = {
        "lower_bound_bytes": bound,
        "schedule_gap": (peak - bound) / peak if peak else 0.0,
        "schedule_optimal": peak == bound,
    }
    if recomputes:
        figures.update(recomputed_ops=len(idx) - len(graph.ops), recompute_flops=recompute_flops(graph, idx))
    if lts is not None:
        figures["arena_lower_bound_bytes"] = live_bytes_peak(lts)
    return figures


def simulated_figures(graph, order, placement, alignment: int, unplaced=frozenset(), *, copied=frozenset(),
                      device_type: str = "cpu", expandable_segments: bool = False, planned=None) -> dict:
    """The figures of a plan the simulator recomputes (bytes): a saved plan's own are
    not trusted (it may come from another tool, or have been edited). ``unplaced``,
    ``copied``: the executor's fallback results and those copied into the arena
    (:func:`fallback_figures`); ``expandable_segments``: see :func:`make_plan`.
    ``planned``: the graph the peaks are simulated on (under a budget
    :func:`budget_graph`, the kernels' temporaries included), ``graph`` when None."""
    expandable = expandable_segments and device_type == "cuda"
    planned = graph if planned is None else planned
    peak = simulate(planned, order).peak_bytes
    eager = simulate(planned, eager=True).peak_bytes
    figures = {
        "ops": len(graph.ops),
        "buffers": len(graph.buffers),
        "persistent_bytes": graph.persistent_bytes,
        "eager_peak_bytes": eager,
        "peak_bytes": peak,
        "transient_peak_bytes": peak - graph.persistent_bytes,
        "eager_transient_peak_bytes": eager - graph.persistent_bytes,
        "output_bytes": sum(b.size for b in graph.buffers if b.output),
        "alignment_bytes": alignment,
        **reorder_figures(graph, order, alignment, device_type, expandable=expandable),
        **program_figures(graph, alignment, device_type, expandable=expandable),
    }
    if device_type == "cuda":
        figures["expandable_segments"] = expandable
        # eager's reserved memory in the same simulation: what the executors' figures compare with
        figures["eager_reserved_bytes"] = simulate_eager_allocator(graph, expandable_segments=expandable).reserved_bytes
    if placement is not None:
        figures["arena_bytes"] = placement.arena_bytes
        eager_lts = arena_lifetimes(graph, None, alignment, eager=True)
        figures["eager_caching_allocator_bytes"] = caching_allocator_bytes(eager_lts, expandable=expandable)
        figures.update(fallback_figures(graph, order, alignment, unplaced, copied, device_type,
                                        expandable=expandable))
    return figures
