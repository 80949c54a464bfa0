"""What lies beside the arena: the memory a planned step takes from PyTorch's allocator
outside its arena, and where the arena executor's fallback results go.

An op with no kernel that writes into a given buffer (a *fallback*, see
:mod:`model_runtime.lowering`) makes its results in PyTorch's allocator. They either
stay there until their last use, or are copied into their arena slot right after the op
(:func:`fallback_copies` picks which, op by op). Beside them lie the libraries'
workspaces (:func:`workspace_lifetimes`). All of it shares one allocator, simulated
here: on CUDA the caching allocator in its steady state (:func:`caching_reserve`; in
the setting the step runs with, ``expandable=True`` for
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``), elsewhere the live peak.
"""

from __future__ import annotations

from collections.abc import Sequence

from model_ir import Lifetime
from model_ir.plan import order_indices
from model_ir.recompute import RngReplays, instance_owners
from model_ir.simulator import without_held_gradients
from model_ir.workspaces import ARENA_TEMPORARIES, on_allocator_clock
from model_place import lifetimes_from_graph, live_bytes_peak, simulate_training_steps
from model_place.caching_allocator import pool_of, reserved_lower_bound, round_size


def instance_owners_of(graph, order) -> dict[str, str]:
    """The buffer of each recomputed instance of ``order`` (op ids, a Schedule, or None)."""
    if order is None:
        return {}
    return instance_owners(graph, order_indices(graph, order))


def unplaced_figures(graph, order, alignment: int, unplaced, lifetimes=None) -> dict:
    """Figures (bytes) of the transient buffers an executor leaves to PyTorch's
    allocator (``unplaced``, e.g. the arena executor's fallbacks): their total, the peak
    of their live bytes in ``order``, and what PyTorch's caching allocator reserves for
    them (simulated, default setting). ``lifetimes``: those of every buffer in
    ``order`` when the caller has them."""
    if not unplaced:
        return {"unplaced_bytes": 0, "unplaced_live_peak_bytes": 0, "unplaced_caching_allocator_bytes": 0}
    owner = instance_owners_of(graph, order)
    if lifetimes is None:
        lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    lts = [lt for lt in lifetimes if owner.get(lt.id, lt.id) in unplaced]
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


def workspace_lifetimes(graph, order, *, arena: bool = False) -> tuple[list[Lifetime], list[Lifetime]]:
    """``(kept, step)``: the memory the libraries take from PyTorch's allocator beside the
    arena in a planned step (:mod:`model_ir.workspaces`). On CUDA, ``kept``: one cuBLAS
    workspace, kept from the first matmul on (a planned step runs every op on the calling
    thread; its size follows the capability the graph was captured on, Hopper when not
    recorded); ``step``: what :func:`model_ir.workspaces.transient_workspaces` gives
    (cuDNN's convolution workspaces, the split reductions' staging buffers, the
    attention and embedding backward's temporaries), each alive while its op runs. On
    the CPU, ``step``: the temporaries of :func:`model_ir.workspaces.cpu_kernel_temporaries`
    and the generator states kept for replayed draws (:func:`rng_state_lifetimes`).
    ``arena``: as the arena executor runs the step, whose rewrite of an op may take other
    temporaries than its kernel (``graph.meta[ARENA_TEMPORARIES]``, recorded by
    ``optimize()``: those stand in for the kernel's)."""
    from model_ir.workspaces import (cpu_kernel_temporaries, cublas_threads, graph_cublas_workspace_bytes,
                                     transient_workspaces)

    idx = order_indices(graph, order)
    rewritten = graph.meta.get(ARENA_TEMPORARIES) or {} if arena else {}
    if graph.meta.get("device") != "cuda":
        # model-bench's CPU graphs hold the kernels' temporaries as buffers already (with_workspaces)
        sizes = {} if graph.meta.get("workspaces") else {**cpu_kernel_temporaries(graph), **rewritten}
        return [], [*(Lifetime(f"temporary:{graph.ops[i].id}@{t}", t, t + 1, sizes[graph.ops[i].id])
                      for t, i in enumerate(idx) if graph.ops[i].id in sizes), *rng_state_lifetimes(graph, idx)]
    cublas = cublas_threads(graph, eager=False) * graph_cublas_workspace_bytes(graph)
    kept = [Lifetime("workspace:cublas", 0, len(idx) + 1, cublas)] if cublas else []
    if graph.meta.get("workspaces"):  # model-bench's graphs hold them as buffers already (with_workspaces)
        return kept, []
    sizes = {**transient_workspaces(graph), **rewritten}
    step = [Lifetime(f"workspace:{graph.ops[i].id}@{t}", t, t + 1, sizes[graph.ops[i].id])
            for t, i in enumerate(idx) if graph.ops[i].id in sizes]
    return kept, step


def rng_state_lifetimes(graph, idx: Sequence[int]) -> list[Lifetime]:
    """The CPU generator states an executor holds to replay draws in the order of op
    positions ``idx`` (:mod:`model_ir.torch.rng_replay`; the Mersenne twister's 5 KiB
    each): one kept from its op's first run to the last run that replays it, and one
    swapped out while each replay runs. (A CUDA generator's state is host memory.)"""
    replays = RngReplays(graph, idx)
    if not replays.saved:
        return []
    import torch  # here: the CLI loads this module without torch

    size = torch.default_generator.get_state().nbytes
    runs: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    lts = []
    for t, i in enumerate(idx):
        op = graph.ops[i]
        runs[op.id] = runs.get(op.id, 0) + 1
        if op.id in replays.saved and runs[op.id] == 1:
            first[op.id] = t
        source = replays.source(op, runs[op.id])
        if source:
            last[source] = t
            lts.append(Lifetime(f"rng_state:{op.id}@{t}", t, t + 1, size))
    return lts + [Lifetime(f"rng_state:{op}", t, last.get(op, t) + 1, size) for op, t in first.items()]


def step_outputs(graph) -> frozenset[str]:
    """The step's outputs (the loss; in eval the model's outputs): never in the arena,
    alive from their op to the end of the step beside it."""
    return frozenset(b.id for b in graph.buffers if b.output)


def fallback_groups(graph, fallbacks) -> dict[str, frozenset[str]]:
    """Op id -> its results in ``fallbacks``, for the ops that have some: the executor
    copies an op's results into the arena all together or not at all."""
    groups = {op.id: frozenset(b for b in op.outputs if b in fallbacks) for op in graph.ops}
    return {op: bs for op, bs in groups.items() if bs}


def fallback_figures(graph, order, alignment: int, fallbacks, copied, device_type: str, *,
                     expandable: bool = False) -> dict:
    """Where the arena executor's fallback results (``fallbacks``) live, in figures (bytes).

    Those in ``copied`` are placed and copied into their arena slot right after their
    op: they live beside the arena only while it runs (``fallback_copied_bytes``: their
    total; ``fallback_copy_bytes``: the most beside it at a time). The others are left
    to PyTorch's allocator until their last use (:func:`unplaced_figures`).
    ``beside_arena_bytes``: what the device holds beside the arena for both, for the
    step outputs (the loss; in eval the model's outputs) and for the libraries'
    workspaces and temporaries (:func:`workspace_lifetimes`; alone:
    ``library_workspace_bytes``), all in one allocator: on CUDA what its caching
    allocator reserves (simulated; after a first block of ``warm_block_bytes``, see
    :func:`caching_reserve`; ``expandable``: with expandable segments), elsewhere the
    live peak.
    """
    copied = frozenset(copied) & frozenset(fallbacks)
    unplaced = frozenset(fallbacks) - copied
    lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    workspaces = workspace_lifetimes(graph, order, arena=True)
    figures = unplaced_figures(graph, order, alignment, unplaced, lifetimes)
    copies = copy_lifetimes(graph, order, alignment, copied)
    figures["fallback_copied_bytes"] = sum(graph.buffer(b).size for b in copied)
    figures["fallback_copy_bytes"] = live_bytes_peak(copies) if copies else 0
    figures["library_workspace_bytes"] = _beside_arena(graph, order, alignment, frozenset(), [], device_type,
                                                       lifetimes, workspaces, expandable=expandable)[0]
    figures["beside_arena_bytes"], figures["warm_block_bytes"] = _beside_arena(
        graph, order, alignment, unplaced | step_outputs(graph), copies, device_type, lifetimes, workspaces,
        expandable=expandable)
    return figures


def reorder_figures(graph, order, alignment: int, device_type: str, *, expandable: bool = False) -> dict:
    """What the ``reorder`` executor takes from PyTorch's allocator running ``order``
    (bytes): every transient buffer from its op to its last use (a step output to the
    end of the step), beside the libraries' workspaces, all of it
    as :func:`_beside_arena` holds what lies beside an arena (on CUDA the caching
    allocator's steady state after a first block of ``reorder_warm_block_bytes``,
    elsewhere the live peak). It is the arena executor with every result left outside
    an arena of 0 bytes, so ``reorder_transient_bytes`` compares with ``arena_bytes +
    beside_arena_bytes`` (:func:`least_memory_executor`)."""
    reserved, warm = _all_beside(graph, order, alignment, device_type, expandable=expandable)
    return {"reorder_transient_bytes": reserved, "reorder_warm_block_bytes": warm}


def program_figures(graph, alignment: int, device_type: str, *, expandable: bool = False) -> dict:
    """What the ``program`` executor (eager's order and frees, see
    :func:`model_runtime.executors.build_program_order`) takes from PyTorch's allocator,
    as :func:`reorder_figures` for the reorder executor: ``program_transient_bytes`` and
    its first block ``program_warm_block_bytes``. It sets no ``.grad``: each gradient is
    freed after its last reader, where eager's training loop holds it in ``.grad`` to the
    end of the step (``eager_transient_bytes``, the same way)."""
    order = [op.id for op in graph.ops]

    def held(g) -> tuple[int, int]:
        eager = lifetimes_from_graph(g, order, alignment=alignment, eager=True)
        return _all_beside(g, order, alignment, device_type, eager, expandable=expandable)

    program = without_held_gradients(graph)
    reserved, warm = held(program)
    return {"program_transient_bytes": reserved, "program_warm_block_bytes": warm,
            "eager_transient_bytes": reserved if program is graph else held(graph)[0]}


def _all_beside(graph, order, alignment: int, device_type: str, lifetimes=None, *,
                expandable: bool = False) -> tuple[int, int]:
    """:func:`_beside_arena` with every transient buffer in PyTorch's allocator (an
    executor without an arena), in ``lifetimes`` (default: freed after their last use)."""
    transient = frozenset(b.id for b in graph.buffers if not b.persistent)
    return _beside_arena(graph, order, alignment, transient, [], device_type, lifetimes, expandable=expandable)


#: The executors ``optimize(executor="auto")`` chooses from, in the order a tie prefers.
CHOICES = ("arena", "reorder", "program")


def auto_choices(device_type: str, *, placed: bool = True, budget: bool = False) -> tuple[str, ...]:
    """Those of :data:`CHOICES` that ``executor="auto"`` picks from for a plan on
    ``device_type``: the arena only for a plan with a placement (``placed``) and off the
    CPU (there, the live peak, no arena holds less than reorder, a tie included), the
    program executor only without a memory budget (it runs eager's order, unbudgeted)."""
    return tuple(c for c in CHOICES if (c != "arena" or placed and device_type != "cpu")
                 and (c != "program" or not budget))


def least_memory_executor(figures, choices: Sequence[str] = CHOICES) -> str:
    """The executor of ``choices`` that the plan's figures say holds the least memory
    beside the persistent buffers (:func:`held_by`), the first on a tie or when the
    figures say nothing of the others; ``choices[0]`` when they say nothing."""
    held = {name: nbytes for name in choices if (nbytes := held_by(figures, name)) is not None}
    if choices[0] not in held:
        return choices[0]
    return min(held, key=lambda name: (held[name], choices.index(name)))


def held_by(figures, executor: str) -> int | None:
    """What ``executor`` holds beside the persistent buffers by the plan's figures
    (bytes; None when they lack it): the arena and what lies beside it, or the reorder
    or program executor's transient memory."""
    if executor in ("reorder", "program"):
        return figures.get(f"{executor}_transient_bytes")
    if "arena_bytes" not in figures:
        return None
    return figures["arena_bytes"] + figures.get("beside_arena_bytes", 0)


def above_eager(figures, executor: str) -> str | None:
    """Why ``executor`` running the plan would reserve more than eager PyTorch (one line),
    by the figures of a CUDA plan (``eager_reserved_bytes``, same simulation and
    allocator setting), or None when it would not (or the figures cannot say)."""
    held, eager = held_by(figures, executor), figures.get("eager_reserved_bytes")
    if held is None or eager is None:
        return None
    total = figures["persistent_bytes"] + held
    if total <= eager:
        return None
    return (f"the {executor} executor would reserve {total} bytes, more than eager PyTorch's {eager} "
            f"(simulated{', expandable segments' if figures.get('expandable_segments') else ''}): "
            "no plan found here holds less than eager for this step")


def above_budget(figures, executor: str) -> str | None:
    """Why ``executor`` running a plan that fits its ``memory_budget`` (the simulated
    peak of the step's buffers and its kernels' temporaries) would hold more (one line), or None when it would not
    (or the figures cannot say)."""
    held, budget = held_by(figures, executor), figures.get("memory_budget")
    if held is None or budget is None or not figures.get("fits_budget"):
        return None
    total = figures["persistent_bytes"] + held
    if total <= budget:
        return None
    what = "reserve" if figures.get("eager_reserved_bytes") is not None else "hold"
    fallbacks = "the fallbacks' results, " if executor == "arena" else ""
    return (f"the memory budget of {budget} bytes bounds the simulated peak of the step ({figures['peak_bytes']}: its "
            f"buffers and the kernels' temporaries); the {executor} executor would {what} {total} bytes (simulated): "
            f"{fallbacks}the libraries' lasting workspaces and the allocator's rounding lie beside them; a budget "
            f"about {total - budget} bytes lower leaves room for them")


def _beside_arena(graph, order, alignment: int, unplaced, copies, device_type: str, lifetimes=None,
                  workspaces=None, *, expandable: bool = False) -> tuple[int, int]:
    """``(bytes, warm)``: what the device holds beside the arena for the results
    ``unplaced`` (alive to their last use), the ``copies`` (temporaries' lifetimes) and
    the libraries' ``workspaces`` (:func:`workspace_lifetimes`, computed when None), and
    on CUDA the first block that gets the caching allocator there
    (:func:`caching_reserve`, with expandable segments when ``expandable``; 0: none).
    On CUDA the persistent buffers were allocated first in the same allocator, and its
    requests come in the order :func:`model_ir.workspaces.on_allocator_clock` gives (a
    backward convolution's two workspaces); ``bytes`` is what it reserves beyond the
    persistent bytes. ``lifetimes``: those of every buffer in ``order`` when the caller
    has them."""
    if device_type != "cuda":
        return beside_live_bytes(graph, order, alignment, unplaced, copies, device_type, lifetimes, workspaces), 0
    step, kept = _beside_requests(graph, order, alignment, unplaced, copies, device_type, lifetimes, workspaces)
    held = _persistent_lifetimes(graph)
    reserved, warm = caching_reserve(step, kept, held=held, expandable=expandable)
    return reserved - sum(lt.size for lt in held), warm


def _persistent_lifetimes(graph) -> list[Lifetime]:
    """The persistent buffers as the allocator sees them on CUDA: allocated before the step, never freed."""
    return [Lifetime(f"persistent:{b.id}", 0, 1, b.size) for b in graph.buffers if b.persistent and b.size]


def _beside_bound(graph, order, alignment: int, unplaced, copies, device_type: str, lifetimes=None,
                  workspaces=None, *, expandable: bool = False) -> int:
    """A lower bound of :func:`_beside_arena`'s bytes without replaying the allocator:
    on CUDA, what it must reserve to hold the persistent buffers and every request alive
    together, pool by pool (:func:`model_place.caching_allocator.reserved_lower_bound`),
    less the persistent bytes; elsewhere the exact figure, the live peak."""
    if device_type != "cuda":
        return beside_live_bytes(graph, order, alignment, unplaced, copies, device_type, lifetimes, workspaces)
    step, kept = _beside_requests(graph, order, alignment, unplaced, copies, device_type, lifetimes, workspaces)
    held = _persistent_lifetimes(graph)
    return reserved_lower_bound(held, [*kept, *step], expandable_segments=expandable) - sum(lt.size for lt in held)


def beside_live_bytes(graph, order, alignment: int, unplaced, copies, device_type: str, lifetimes=None,
                      workspaces=None) -> int:
    """The most bytes that lie beside the arena at a time for the results ``unplaced``,
    the ``copies`` and the libraries' workspaces (arguments of :func:`_beside_arena`):
    what the device holds for them off CUDA, and what PyTorch's allocator has allocated
    for them at its peak on CUDA (no caching allocator reserves less)."""
    step, kept = _beside_requests(graph, order, alignment, unplaced, copies, device_type, lifetimes, workspaces)
    return live_bytes_peak(step + kept) if step or kept else 0


def _beside_requests(graph, order, alignment: int, unplaced, copies, device_type: str, lifetimes=None,
                     workspaces=None) -> tuple[list[Lifetime], list[Lifetime]]:
    """``(step, kept)``: the lifetimes :func:`_beside_arena` hands the allocator, each
    step's and those allocated once (on CUDA on the allocator's clock)."""
    owner = instance_owners_of(graph, order)
    if lifetimes is None:
        lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    lts = [lt for lt in lifetimes if owner.get(lt.id, lt.id) in unplaced] + list(copies)
    kept, step = workspace_lifetimes(graph, order) if workspaces is None else workspaces
    if device_type != "cuda":
        return lts + step, list(kept)
    return on_allocator_clock(graph, lts + step), on_allocator_clock(graph, kept)


def caching_reserve(step: Sequence[Lifetime], kept: Sequence[Lifetime] = (), *, held: Sequence[Lifetime] = (),
                    expandable: bool = False) -> tuple[int, int]:
    """``(reserved, warm)``: what PyTorch's caching allocator reserves in its steady state
    (simulated) for ``step`` (each step's allocations) and ``kept`` (allocated in the
    first step, never freed), and the size of the block an executor allocates and
    frees at the start of each step to get there (0: none, when that does not reserve
    less; from the second step on its cached segment serves it). ``held``: allocated
    before the first step and never freed (the persistent buffers), counted in what is
    reserved but not in the block.

    The caching allocator never gives a segment back: a request larger than every free
    block gets a new segment, so requests that grow through a step (cuDNN's workspaces
    layer by layer) leave a segment per new size. A first block as large as the most
    they hold at a time (large-pool requests, rounded as the allocator rounds them)
    makes one segment that all of them split instead (CUDA capture of vgg16 b32: the
    workspaces alone 1614 MiB without, 828 MiB with). ``expandable``: the allocator
    with expandable segments, whose segments grow instead (the block is kept only where
    the simulation says it reserves less there too)."""
    plain = caching_allocator_bytes(step, [*held, *kept], expandable=expandable)
    large = [lt for lt in (*kept, *step) if pool_of(round_size(lt.size)) == "large"]
    if not large:
        return plain, 0
    warm = live_bytes_peak(Lifetime(lt.id, lt.start, lt.end, round_size(lt.size)) for lt in large)
    # the block first, then the kept ones (freed with each replayed step: the same blocks again)
    shifted = [Lifetime(lt.id, lt.start + 1, lt.end + 1, lt.size) for lt in (*kept, *step)]
    warmed = caching_allocator_bytes([Lifetime("warm-block", 0, 1, warm), *shifted], held, expandable=expandable)
    return (warmed, warm) if warmed < plain else (plain, 0)


def fallback_copies(graph, order, alignment: int, fallbacks, device_type: str, *,
                    expandable: bool = False) -> frozenset[str]:
    """The fallback results worth copying into the arena in ``order``: those of the ops
    whose results (together) are smaller than a threshold, the threshold that makes the
    arena (its bound, the peak of its live bytes) plus :func:`_beside_arena` smallest,
    fewer copies on a tie (then the smaller threshold). Every threshold counts: none
    copied, all copied, and each op's size in between. Copying a result costs a
    temporary as large while its op runs (and the copy's time); leaving it outside costs
    its bytes beside the arena until its last use, fragmented by the caching allocator
    on CUDA."""
    groups = fallback_groups(graph, fallbacks)
    if not groups:
        return frozenset()
    size = {op: sum(graph.buffer(b).size for b in bs) for op, bs in groups.items()}
    everything = lifetimes_from_graph(graph, order, alignment=alignment)
    workspaces = workspace_lifetimes(graph, order, arena=True)
    # Each threshold's bound (no allocator holds less than its live peak) comes cheap;
    # the allocator is replayed best bound first, until no bound can beat the best
    # cost: the answer of trying them all, in a fifth of the replays on gpt2 and OPT.
    tried = []
    for rank, threshold in enumerate(sorted(set(size.values())) + [float("inf")]):
        copied = frozenset(b for op, bs in groups.items() if size[op] < threshold for b in bs)
        bound = fallback_cost(graph, order, alignment, fallbacks, copied, device_type, everything, workspaces,
                              expandable=expandable, bound_only=True)
        tried.append(((bound, sum(graph.buffer(b).size for b in copied), rank), copied))
    best = None
    for (bound, nbytes, rank), copied in sorted(tried, key=lambda t: t[0]):
        if best is not None and (bound, nbytes, rank) >= best[0]:
            break
        key = (fallback_cost(graph, order, alignment, fallbacks, copied, device_type, everything, workspaces,
                             expandable=expandable), nbytes, rank)
        if best is None or key < best[0]:
            best = key, copied
    return best[1]


def fallback_cost(graph, order, alignment: int, fallbacks, copied, device_type: str, lifetimes=None,
                  workspaces=None, *, expandable: bool = False, bound_only: bool = False) -> int:
    """What :func:`fallback_copies` minimises (bytes): the arena's bound (the peak of its
    live bytes) with the results ``copied`` placed and the other ``fallbacks`` not, plus
    what both take beside it (:func:`_beside_arena`). ``bound_only``: a lower bound of
    it without replaying the allocator (:func:`_beside_bound`)."""
    if lifetimes is None:
        lifetimes = lifetimes_from_graph(graph, order, alignment=alignment)
    if workspaces is None:
        workspaces = workspace_lifetimes(graph, order, arena=True)
    owner = instance_owners_of(graph, order)
    unplaced = frozenset(fallbacks) - frozenset(copied)
    outputs = step_outputs(graph)
    arena = live_bytes_peak(lt for lt in lifetimes if owner.get(lt.id, lt.id) not in outputs | unplaced)
    copies = copy_lifetimes(graph, order, alignment, copied)
    if bound_only:
        return arena + _beside_bound(graph, order, alignment, outputs | unplaced, copies, device_type, lifetimes,
                                     workspaces, expandable=expandable)
    return arena + _beside_arena(graph, order, alignment, outputs | unplaced, copies,
                                 device_type, lifetimes, workspaces, expandable=expandable)[0]


def caching_allocator_bytes(lifetimes: Sequence[Lifetime], kept: Sequence[Lifetime] = (), *,
                            expandable: bool = False) -> int:
    """What PyTorch's caching allocator (default setting; ``expandable``: with
    expandable segments) reserves for ``lifetimes`` run step after step, in its steady
    state (simulated), beside ``kept`` (allocated once, never freed)."""
    return simulate_training_steps(kept, lifetimes, expandable_segments=expandable).reserved_bytes
