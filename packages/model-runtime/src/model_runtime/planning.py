"""Making the plan of a captured step: order (model_sched), addresses (model_place), figures."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from model_ir import Lifetime, ModelOptError, Plan, Schedule, simulate, validate_order
from model_ir.plan import order_indices
from model_ir.recompute import instance_owners, recompute_flops
from model_place import lifetimes_from_graph, live_bytes_peak, place, simulate_training_steps, validate_placement
from model_place.caching_allocator import pool_of, round_size
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
    owner = _owners(graph, order)
    return tuple(lt for lt in lifetimes_from_graph(graph, order, alignment=alignment, eager=eager)
                 if owner.get(lt.id, lt.id) not in outside)


def _owners(graph, order) -> dict[str, str]:
    """The buffer of each recomputed instance of ``order`` (op ids, a Schedule, or None)."""
    if order is None:
        return {}
    return instance_owners(graph, order_indices(graph, order))


def unplaced_figures(graph, order, alignment: int, unplaced) -> dict:
    """Figures (bytes) of the transient buffers an executor leaves to PyTorch's
    allocator (``unplaced``, e.g. the arena executor's fallbacks): their total, the peak
    of their live bytes in ``order``, and what PyTorch's caching allocator reserves for
    them (simulated, default setting)."""
    if not unplaced:
        return {"unplaced_bytes": 0, "unplaced_live_peak_bytes": 0, "unplaced_caching_allocator_bytes": 0}
    owner = _owners(graph, order)
    lts = [lt for lt in lifetimes_from_graph(graph, order, alignment=alignment) if owner.get(lt.id, lt.id) in unplaced]
    return {"unplaced_bytes": sum(lt.size for lt in lts), "unplaced_live_peak_bytes": live_bytes_peak(lts),
            "unplaced_caching_allocator_bytes": caching_allocator_bytes(lts)}


def copy_lifetimes(graph, order, alignment: int, copied) -> list[Lifetime]:
    """The temporaries of the fallbacks whose results are copied into the arena: each
    result in ``copied`` of each run of its op in ``order``, alive while the op runs
    (one step) beside the arena."""
    if not copied:
        return []
    lts = []
    for t, i in enumerate(order_indices(graph, order)):
        for b in graph.ops[i].outputs:
            if b in copied:
                lts.append(Lifetime(f"{b}@{t}", t, t + 1, graph.buffer(b).size, alignment))
    return lts


def workspace_lifetimes(graph, order) -> tuple[list[Lifetime], list[Lifetime]]:
    """``(kept, step)``: the memory the libraries take from PyTorch's allocator beside the
    arena in a planned step (:mod:`model_ir.workspaces`). On CUDA, ``kept``: one cuBLAS
    workspace, kept from the first matmul on (a planned step runs every op on the calling
    thread; its size follows the capability the graph was captured on, Hopper when not
    recorded); ``step``: cuDNN's convolution workspaces and the split reductions'
    staging buffers, each alive while its op runs. On the CPU, ``step``: the temporaries
    of :func:`model_ir.workspaces.cpu_kernel_temporaries`."""
    from model_ir.workspaces import (DEFAULT_CAPABILITY, cpu_kernel_temporaries, cublas_workspace_bytes,
                                     transient_workspaces, uses_cublas)

    idx = order_indices(graph, order)
    if graph.meta.get("device") != "cuda":
        sizes = cpu_kernel_temporaries(graph)
        return [], [Lifetime(f"temporary:{graph.ops[i].id}@{t}", t, t + 1, sizes[graph.ops[i].id])
                    for t, i in enumerate(idx) if graph.ops[i].id in sizes]
    kept = []
    if any(uses_cublas(op.target) for op in graph.ops):
        capability = tuple(graph.meta.get("cuda_capability") or DEFAULT_CAPABILITY)
        kept.append(Lifetime("workspace:cublas", 0, len(idx) + 1,
                             cublas_workspace_bytes(capability, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))))
    sizes = transient_workspaces(graph)
    step = [Lifetime(f"workspace:{graph.ops[i].id}@{t}", t, t + 1, sizes[graph.ops[i].id])
            for t, i in enumerate(idx) if graph.ops[i].id in sizes]
    return kept, step


def fallback_groups(graph, fallbacks) -> dict[str, frozenset[str]]:
    """Op id -> its results in ``fallbacks``, for the ops that have some: the executor
    copies an op's results into the arena all together or not at all."""
    groups = {op.id: frozenset(b for b in op.outputs if b in fallbacks) for op in graph.ops}
    return {op: bs for op, bs in groups.items() if bs}


def fallback_figures(graph, order, alignment: int, fallbacks, copied, device_type: str) -> dict:
    """Where the arena executor's fallback results (``fallbacks``) live, in figures (bytes).

    Those in ``copied`` are placed and copied into their arena slot right after their
    op: they live beside the arena only while it runs (``fallback_copied_bytes``: their
    total; ``fallback_copy_bytes``: the most beside it at a time). The others are left
    to PyTorch's allocator until their last use (:func:`unplaced_figures`).
    ``beside_arena_bytes``: what the device holds beside the arena for both and for
    the libraries' workspaces and temporaries (:func:`workspace_lifetimes`; alone:
    ``library_workspace_bytes``), all in one allocator: on CUDA what its caching
    allocator reserves (simulated; after a first block of ``warm_block_bytes``, see
    :func:`caching_reserve`), elsewhere the live peak.
    """
    copied = frozenset(copied) & frozenset(fallbacks)
    figures = unplaced_figures(graph, order, alignment, frozenset(fallbacks) - copied)
    copies = copy_lifetimes(graph, order, alignment, copied)
    figures["fallback_copied_bytes"] = sum(graph.buffer(b).size for b in copied)
    figures["fallback_copy_bytes"] = live_bytes_peak(copies) if copies else 0
    kept, step = workspace_lifetimes(graph, order)
    if device_type == "cuda":
        figures["library_workspace_bytes"] = caching_reserve(step, kept)[0] if kept or step else 0
    else:
        figures["library_workspace_bytes"] = live_bytes_peak(kept + step) if kept or step else 0
    figures["beside_arena_bytes"], figures["warm_block_bytes"] = _beside_arena(
        graph, order, alignment, frozenset(fallbacks) - copied, copies, device_type)
    return figures


def _beside_arena(graph, order, alignment: int, unplaced, copies, device_type: str, lifetimes=None,
                  workspaces=None) -> tuple[int, int]:
    """``(bytes, warm)``: what the device holds beside the arena for the results
    ``unplaced`` (alive to their last use), the ``copies`` (temporaries' lifetimes) and
    the libraries' ``workspaces`` (:func:`workspace_lifetimes`, computed when None), and
    on CUDA the first block that gets the caching allocator there
    (:func:`caching_reserve`; 0: none). ``lifetimes``: those of every buffer in
    ``order`` when the caller has them."""
    owner = _owners(graph, order)
    if lifetimes is None:
        lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    lts = [lt for lt in lifetimes if owner.get(lt.id, lt.id) in unplaced] + list(copies)
    kept, step = workspace_lifetimes(graph, order) if workspaces is None else workspaces
    if device_type != "cuda":
        return (live_bytes_peak(lts + kept + step) if lts or kept or step else 0), 0
    return caching_reserve(lts + step, kept)


def caching_reserve(step: Sequence[Lifetime], kept: Sequence[Lifetime] = ()) -> tuple[int, int]:
    """``(reserved, warm)``: what PyTorch's caching allocator reserves in its steady state
    (simulated) for ``step`` (each step's allocations) and ``kept`` (allocated in the
    first step, never freed), and the size of the block the executor allocates and frees
    once before the first step to get there (0: none, when that does not reserve less).

    The caching allocator never gives a segment back: a request larger than every free
    block gets a new segment, so requests that grow through a step (cuDNN's workspaces
    layer by layer) leave a segment per new size. A first block as large as the most
    they hold at a time (large-pool requests, rounded as the allocator rounds them)
    makes one segment that all of them split instead (CUDA capture of vgg16 b32: the
    workspaces alone 1606 MiB without, 820 MiB with)."""
    plain = caching_allocator_bytes(step, kept)
    large = [lt for lt in (*kept, *step) if pool_of(round_size(lt.size)) == "large"]
    if not large:
        return plain, 0
    warm = live_bytes_peak(Lifetime(lt.id, lt.start, lt.end, round_size(lt.size)) for lt in large)
    # the block first, then the kept ones (freed with each replayed step: the same blocks again)
    shifted = [Lifetime(lt.id, lt.start + 1, lt.end + 1, lt.size) for lt in (*kept, *step)]
    warmed = caching_allocator_bytes([Lifetime("warm-block", 0, 1, warm), *shifted])
    return (warmed, warm) if warmed < plain else (plain, 0)


def fallback_copies(graph, order, alignment: int, fallbacks, device_type: str) -> frozenset[str]:
    """The fallback results worth copying into the arena in ``order``: those of the ops
    whose results (together) are smaller than a threshold, the threshold that makes the
    arena (its bound, the peak of its live bytes) plus :func:`_beside_arena` smallest,
    fewer copies on a tie. Every threshold is tried: none copied, all copied, and each
    op's size in between. Copying a result costs a temporary as large while its op runs
    (and the copy's time); leaving it outside costs its bytes beside the arena until its
    last use, fragmented by the caching allocator on CUDA."""
    groups = fallback_groups(graph, fallbacks)
    if not groups:
        return frozenset()
    size = {op: sum(graph.buffer(b).size for b in bs) for op, bs in groups.items()}
    everything = lifetimes_from_graph(graph, order, alignment=alignment)
    workspaces = workspace_lifetimes(graph, order)
    best = None
    for threshold in sorted(set(size.values())) + [float("inf")]:
        copied = frozenset(b for op, bs in groups.items() if size[op] < threshold for b in bs)
        key = (fallback_cost(graph, order, alignment, fallbacks, copied, device_type, everything, workspaces),
               sum(graph.buffer(b).size for b in copied))
        if best is None or key < best[0]:
            best = key, copied
    return best[1]


def fallback_cost(graph, order, alignment: int, fallbacks, copied, device_type: str, lifetimes=None,
                  workspaces=None) -> int:
    """What :func:`fallback_copies` minimises (bytes): the arena's bound (the peak of its
    live bytes) with the results ``copied`` placed and the other ``fallbacks`` not, plus
    what both take beside it (:func:`_beside_arena`)."""
    if lifetimes is None:
        lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    owner = _owners(graph, order)
    unplaced = frozenset(fallbacks) - frozenset(copied)
    not_placed = {b.id for b in graph.buffers if b.output} | unplaced
    arena = live_bytes_peak(lt for lt in lifetimes if owner.get(lt.id, lt.id) not in not_placed)
    return arena + _beside_arena(graph, order, alignment, unplaced, copy_lifetimes(graph, order, alignment, copied),
                                 device_type, lifetimes, workspaces)[0]


def caching_allocator_bytes(lifetimes: Sequence[Lifetime], kept: Sequence[Lifetime] = ()) -> int:
    """What PyTorch's caching allocator (default setting) reserves for ``lifetimes`` run
    step after step, in its steady state (simulated), beside ``kept`` (allocated once,
    never freed)."""
    return simulate_training_steps(kept, lifetimes).reserved_bytes


def place_scheduled(graph, sched, place_order: Callable[[Sequence[str], float], object],
                    time_limit: float) -> tuple[tuple[str, ...], object]:
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
    memory budget (recomputation) nor when the scheduler was ``lns`` itself.
    """
    order = tuple(sched.order)
    if sched.memory_budget is not None or sched.method == "lns":
        return order, place_order(order, time_limit)
    start = time.perf_counter()
    found = schedule(graph, method="lns", time_limit=min(OTHER_ORDER_SECONDS, 0.02 * time_limit))
    other = tuple(found.order)
    if other == order or found.peak_bytes != sched.peak_bytes:
        return order, place_order(order, time_limit - (time.perf_counter() - start))
    placement = place_order(order, time_limit * FIRST_PLACEMENT_SHARE)
    if placement.optimal:
        return order, placement
    again = place_order(other, max(0.1, time_limit - (time.perf_counter() - start)))
    return (other, again) if again.arena_bytes < placement.arena_bytes else (order, placement)


#: How :func:`make_plan` may hold the fallbacks' results (see :func:`fallback_figures`).
FALLBACK_RESULTS = ("auto", "outside", "copied")


def make_plan(graph, *, device_type: str = "cpu", placement: bool = True, time_limit: float | None = None,
              schedule_method: str = "auto", place_method: str = "auto", unplaced=frozenset(),
              memory_budget: int | None = None, fallback_results: str = "auto") -> Plan:
    """Schedule ``graph``, place its arena buffers (when ``placement``) and gather the figures.

    ``time_limit`` (seconds) applies to each solver separately (default
    :data:`DEFAULT_TIME_LIMIT`). Figures (bytes, seconds): ``peak_bytes`` and
    ``eager_peak_bytes`` (persistent included), ``lower_bound_bytes``, ``schedule_gap``,
    ``persistent_bytes``, ``arena_bytes``, ``arena_lower_bound_bytes``,
    ``eager_caching_allocator_bytes`` (what PyTorch's caching allocator would reserve
    for the same buffers in program order, simulated), ``output_bytes`` (step outputs,
    allocated outside the arena), ``schedule_seconds``, ``place_seconds``; with
    ``unplaced`` (the results of the ops the executor runs as fallbacks, which PyTorch's
    allocator makes): ``fallback_results`` says whether they stay ``"outside"`` the arena
    or are ``"copied"`` into it right after their op (then placed like any buffer);
    ``"auto"`` copies those :func:`fallback_copies` picks. The figures then add those of
    :func:`fallback_figures`.
    ``memory_budget`` (bytes): the
    order may recompute ops to keep its peak under it (see :func:`model_sched.schedule`);
    the figures then add ``memory_budget``, ``fits_budget``, ``recomputed_ops``,
    ``recompute_flops``, ``recompute_overhead`` (recomputed FLOPs per FLOP of the
    step) and ``reorder_lower_bound_bytes``, and ``lower_bound_bytes`` is the bound of
    any plan with recomputation.
    """
    if fallback_results not in FALLBACK_RESULTS:
        raise RuntimeLayerError(f"fallback_results must be one of {', '.join(FALLBACK_RESULTS)}, "
                                f"got {fallback_results!r}")
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    sched = schedule(graph, method=schedule_method, time_limit=limit, memory_budget=memory_budget)
    alignment = device_alignment(device_type)
    order, result = sched.order, None
    place_start = time.perf_counter()

    copied = frozenset()
    if placement:
        copied = {"outside": frozenset(), "copied": frozenset(unplaced),
                  "auto": fallback_copies(graph, sched.order, alignment, unplaced, device_type)}[fallback_results]
        leave_out = frozenset(unplaced) - copied
        order, result = place_scheduled(
            graph, sched, lambda o, seconds: place(arena_lifetimes(graph, o, alignment, leave_out),
                                                   method=place_method, time_limit=seconds), limit)
    figures = simulated_figures(graph, order, None, alignment)
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
    })
    if memory_budget is not None:
        total = graph.meta.get("flops", {}).get("total", 0)
        figures.update({
            "memory_budget": memory_budget, "fits_budget": sched.fits_budget,
            "recomputed_ops": sched.recomputed_ops, "recompute_flops": sched.recompute_flops,
            "recompute_overhead": sched.recompute_flops / total if total else None,
            "reorder_lower_bound_bytes": sched.reorder_lower_bound_bytes,
        })
    placed = None
    if result is not None:
        figures.update(fallback_figures(graph, order, alignment, unplaced, copied, device_type))
        eager_lts = arena_lifetimes(graph, None, alignment, eager=True)
        placed = result.placement()
        figures.update({
            "arena_bytes": result.arena_bytes,
            "arena_lower_bound_bytes": result.lower_bound_bytes,
            "placement_status": result.status,
            "place_seconds": time.perf_counter() - place_start,  # every order placed, not only the kept one
            "place_method": result.method,
            "eager_caching_allocator_bytes": caching_allocator_bytes(eager_lts),
            "eager_transient_live_peak_bytes": live_bytes_peak(eager_lts),
        })
    return Plan(graph, Schedule(order), placed, figures)


def _structure(graph) -> tuple:
    buffers = tuple((b.id, b.size, b.persistent, b.output) for b in graph.buffers)
    ops = tuple((o.id, tuple(o.inputs), tuple(o.outputs), tuple(o.mutates), tuple(o.after)) for o in graph.ops)
    return buffers, ops


def check_saved_plan(plan: Plan, graph, *, needs_placement: bool, alignment: int, unplaced=frozenset(),
                     device_type: str = "cpu", copies_unplaced: bool = True) -> Plan:
    """``plan`` re-targeted to ``graph`` (the step captured now), after checking that
    it was made for the same step and that its order (and placement, when
    ``needs_placement``) are valid for it. Raises :class:`ReoptimizeError` otherwise.
    ``unplaced``: the executor's fallback results; with ``copies_unplaced``, those of
    an op the placement places are copied into the arena (see :func:`make_plan`)."""
    if _structure(plan.graph) != _structure(graph):
        raise ReoptimizeError(
            f"the saved plan was made for another step ({len(plan.graph.ops)} ops, {len(plan.graph.buffers)} "
            f"buffers; this step has {len(graph.ops)} ops, {len(graph.buffers)} buffers, or other sizes): "
            "the model, batch shape, optimizer or granularity differ; optimize without plan= to make a new one"
        )
    validate_order(graph, order_indices(graph, plan.schedule))
    if needs_placement and plan.placement is None:
        raise ReoptimizeError("the saved plan has no placement, which this executor needs; "
                              "optimize without plan= to make one")
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
    return Plan(graph, plan.schedule, placement,
                {**simulated_figures(graph, plan.schedule, placement, alignment, unplaced, copied=copied,
                                     device_type=device_type),
                 **bound_figures(graph, plan.schedule, lts if placement is not None else None)})


def check_saved_placement(lts, placement, alignment: int) -> None:
    """Raise :class:`ReoptimizeError` unless ``placement`` is a valid placement of the
    arena lifetimes ``lts`` on a device aligning to ``alignment`` bytes, in an arena no
    larger than every buffer side by side (a larger one is a damaged or edited file,
    and would ask the device for absurd amounts of memory)."""
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
                      device_type: str = "cpu") -> dict:
    """The figures of a plan the simulator recomputes (bytes): a saved plan's own are
    not trusted (it may come from another tool, or have been edited). ``unplaced``,
    ``copied``: the executor's fallback results and those copied into the arena
    (:func:`fallback_figures`)."""
    peak = simulate(graph, order).peak_bytes
    eager = simulate(graph, eager=True).peak_bytes
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
    }
    if placement is not None:
        figures["arena_bytes"] = placement.arena_bytes
        eager_lts = arena_lifetimes(graph, None, alignment, eager=True)
        figures["eager_caching_allocator_bytes"] = caching_allocator_bytes(eager_lts)
        figures.update(fallback_figures(graph, order, alignment, unplaced, copied, device_type))
    return figures
