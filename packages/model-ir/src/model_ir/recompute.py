"""Recomputation: an order may run an op again to make its outputs anew (the model-ir
README, "Memory model": a plan under a memory budget).

A schedule lists an op id more than once; every occurrence after the first is a
*recomputation*. Each occurrence allocates new instances of the op's output buffers,
and a later use of a buffer reads its most recent instance (the simulator gives each
instance its own lifetime; instance ``k >= 2`` of buffer ``b`` is named
:func:`instance_id` ``(b, k)``, e.g. ``"relu@2"``, in lifetimes and placements).

Only ops whose rerun makes the same values may run again: ops that allocate at least
one buffer, write none in place, draw no random numbers unless they replay them
(:data:`REPLAYS_RNG`), and whose outputs are neither step outputs nor ever written in
place; and a recomputation may not run after an op that wrote one of its inputs since
the op first ran (it would read other values).
"""

from __future__ import annotations

from collections.abc import Sequence

from model_ir.graph import Graph

#: Op ``meta`` key marking an op that draws random numbers (never recomputed, unless
#: it also has :data:`REPLAYS_RNG`).
RANDOM = "random"

#: Op ``meta`` key marking a random op whose reruns replay the random numbers of its
#: first run: the executors keep the generator's state from before the first run and
#: run it again from that state, then restore the generator (as
#: ``torch.utils.checkpoint`` does), so a rerun makes the same values and later draws
#: are eager's.
REPLAYS_RNG = "replays_rng"

#: Op ``meta`` key of a random op that replays another op's draws (dropout recomputed
#: by a checkpointed region's backward, :mod:`model_ir.torch.checkpoint_rng`): the id of
#: that op. The executors keep the generator's state from before that op's first run and
#: run this one from it, then restore the generator. Such an op runs once.
REPLAYS_DRAWS_OF = "replays_draws_of"

#: Op ``meta`` key marking an op whose in-place writes are side effects a rerun leaves
#: out (batch norm's running statistics in training mode: its outputs do not depend on
#: them); the executors rerun it without those writes.
RERUN_WITHOUT_WRITES = "rerun_without_writes"


def instance_id(buffer_id: str, k: int) -> str:
    """The id of the ``k``-th instance (1-based) of a buffer: its own id for the first."""
    return buffer_id if k == 1 else f"{buffer_id}@{k}"


def recomputable_ops(graph: Graph) -> frozenset[int]:
    """Positions of the ops an order may run more than once (see the module docstring)."""
    cached = graph.__dict__.get("_recomputable")
    if cached is not None:
        return cached
    written = {b for op in graph.ops for b in op.mutates}
    out = set()
    for i, op in enumerate(graph.ops):
        side_effects_only = op.meta.get(RERUN_WITHOUT_WRITES) and all(graph.buffer(b).persistent
                                                                      for b in op.mutates)
        if (not op.outputs or (op.mutates and not side_effects_only)
                or (op.meta.get(RANDOM) and not op.meta.get(REPLAYS_RNG))):
            continue
        if any(b in written or graph.buffer(b).output for b in op.outputs):
            continue
        out.add(i)
    result = frozenset(out)
    graph.__dict__["_recomputable"] = result
    return result


def recomputations(order: Sequence[int]) -> list[tuple[int, int]]:
    """``(step, op position)`` of every occurrence of an op after its first in ``order``."""
    seen: set[int] = set()
    out = []
    for t, i in enumerate(order):
        if i in seen:
            out.append((t, i))
        else:
            seen.add(i)
    return out


class RngReplays:
    """Which runs of an order's random ops replay draws, for the executors: a recomputed
    op with :data:`REPLAYS_RNG` its own first run's, an op with :data:`REPLAYS_DRAWS_OF`
    the named op's. :attr:`saved`: the ops whose generator state an executor keeps from
    before their first run."""

    def __init__(self, graph: Graph, order: Sequence[int]) -> None:
        self.rerun = {graph.ops[i].id for _, i in recomputations(order) if graph.ops[i].meta.get(REPLAYS_RNG)}
        self.saved = self.rerun | {op.meta[REPLAYS_DRAWS_OF] for op in graph.ops if REPLAYS_DRAWS_OF in op.meta}

    def source(self, op, run: int) -> str | None:
        """The op whose kept generator state run ``run`` (1-based) of ``op`` draws from, or None."""
        return op.meta.get(REPLAYS_DRAWS_OF) or (op.id if op.id in self.rerun and run > 1 else None)


def op_flops(graph: Graph, i: int) -> int:
    """FLOPs of op ``i`` as captured (``meta["flops"]``; 0 when unknown)."""
    return int(graph.ops[i].meta.get("flops", 0))


def recompute_flops(graph: Graph, order: Sequence[int]) -> int:
    """FLOPs the recomputations of ``order`` (op positions) add to the step."""
    return sum(op_flops(graph, i) for _, i in recomputations(order))


def extra_instances(graph: Graph, order: Sequence[int]) -> dict[str, list[str]]:
    """For each buffer a recomputation makes again, the ids of its later instances
    (``[b@2, b@3, ...]``) in the order ``order`` (op positions) makes them."""
    count: dict[str, int] = {}
    out: dict[str, list[str]] = {}
    for i in order:
        for b in graph.ops[i].outputs:
            k = count[b] = count.get(b, 0) + 1
            if k > 1:
                out.setdefault(b, []).append(instance_id(b, k))
    return out


def instance_owners(graph: Graph, order: Sequence[int]) -> dict[str, str]:
    """The buffer of every later instance id in ``order`` (a first instance's id is its buffer's)."""
    return {inst: b for b, ids in extra_instances(graph, order).items() for inst in ids}
