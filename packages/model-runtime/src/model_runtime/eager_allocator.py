"""What eager PyTorch asks of its CUDA caching allocator, simulated: the baselines the
plans are measured against (model-bench's ``eager`` and ``eager-expandable``, and the
``eager_reserved_bytes`` figure of a CUDA plan).

The same simulation as what lies beside a planned step's arena
(:mod:`model_runtime.beside_arena`): the persistent buffers allocated first, the step's
requests on the allocator's clock (:func:`model_ir.workspaces.on_allocator_clock`),
replayed step after step to the steady state (:func:`model_place.simulate_training_steps`).
An eager step differs in its order (the program's), in when it frees (when Python drops
a tensor: ``simulate(..., eager=True)``) and in its cuBLAS workspaces (one per thread
that runs a matmul: the forward's and autograd's).
"""

from __future__ import annotations

from model_ir import Graph, Lifetime, simulate
from model_ir.workspaces import cublas_threads, graph_cublas_workspace_bytes, on_allocator_clock, with_workspaces
from model_place import simulate_training_steps


def eager_step_lifetimes(graph: Graph, order=None, *, workspaces: tuple[int, ...] = (),
                         eager: bool = True) -> tuple[list[Lifetime], list[Lifetime]]:
    """What eager PyTorch asks of its caching allocator, as ``(kept, step)`` lifetimes.

    ``kept``: weights, optimizer state and the batch, allocated before the first step and
    never freed, and the library ``workspaces`` (bytes each, see
    :mod:`model_ir.workspaces`), alive throughout; ``step``: each transient buffer in
    ``order`` (default: program order), cuDNN's workspaces among them in graphs captured
    for CUDA (after their convolution's outputs), freed when eager frees it
    (``simulate(..., eager=True)``: in eval, tensors Python still holds stay), or with
    ``eager=False`` after their last use (a plan's order, recomputation allowed).
    """
    profile = simulate(graph, order, eager=eager)
    n = max(len(graph.ops), 1)
    kept = [Lifetime(b.id, 0, n, b.size) for b in graph.buffers if b.persistent]
    kept += [Lifetime(f"library-workspace:{k}", 0, n, size) for k, size in enumerate(workspaces)]
    return kept, list(profile.lifetimes)


def eager_workspaces(graph: Graph, *, eager: bool = True) -> tuple[int, ...]:
    """The cuBLAS workspaces an eager step of ``graph`` holds (bytes each; none off
    CUDA), or with ``eager=False`` a planned step (one thread runs every op), sized for
    the GPU the graph was captured on (Hopper when not recorded) and
    ``CUBLAS_WORKSPACE_CONFIG``."""
    if graph.meta.get("device") != "cuda":
        return ()
    return (graph_cublas_workspace_bytes(graph),) * cublas_threads(graph, eager=eager)


def allocator_steps(graph: Graph, order=None, *, eager: bool = True) -> tuple[list[Lifetime], list[Lifetime]]:
    """``(kept, step)`` as the caching allocator sees them: :func:`eager_step_lifetimes`
    with the library workspaces of an eager step (``eager``) or of a planned one, the
    step on the allocator's clock (:func:`model_ir.workspaces.on_allocator_clock`)."""
    kept, step = eager_step_lifetimes(graph, order, workspaces=eager_workspaces(graph, eager=eager), eager=eager)
    return kept, on_allocator_clock(graph, step)


def simulate_eager_allocator(graph: Graph, order=None, *, expandable_segments: bool = False):
    """The caching-allocator simulation of eager training steps of ``graph`` (all buffers
    and library workspaces, ``order`` or program order), in its steady state. cuDNN's
    workspaces are buffers of ``graph`` (:func:`model_ir.workspaces.with_workspaces`),
    added here when it has none yet."""
    return simulate_training_steps(*allocator_steps(with_workspaces(graph), order),
                                   expandable_segments=expandable_segments)
