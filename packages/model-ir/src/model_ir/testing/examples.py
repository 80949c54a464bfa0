"""Small example graphs for tests and documentation."""

from __future__ import annotations

import copy
import random
from typing import Any

from model_ir.graph import Graph

_DIAMOND: dict[str, Any] = {
    "format": "model-ir/1", "name": "diamond",
    "buffers": [{"id": "t1", "size": 10}, {"id": "w", "size": 123, "persistent": True},
                {"id": "loss", "size": 4, "output": True}],
    "ops": [{"id": "A", "inputs": [], "outputs": ["t1"]},
            {"id": "B", "inputs": ["t1", "w"], "outputs": ["loss"], "mutates": [], "after": []}],
}


def diamond_json() -> dict[str, Any]:
    """The ``model-ir/1`` example of the format documentation (a fresh copy; peak 137 bytes)."""
    return copy.deepcopy(_DIAMOND)


def training_chain(n: int = 4, *, size: int = 100, small: int = 1, persistent: int = 8,
                   flops=lambda k: 1000 * (k + 1), update: bool = True, total_flops: int | None = None):
    """A training step as a chain: forward ops ``f0..f{n-1}`` make activations ``a{k}``
    of ``size`` bytes (``meta["flops"] = flops(k)``), backward ops ``b{n-1}..b0`` read
    them back in reverse and make gradients ``g{k}`` of ``small`` bytes (``g0`` a step
    output), and with ``update`` an op writes the weight ``w`` in place. ``x`` and ``w``
    are persistent (``persistent`` bytes each). The graph's meta has its FLOP totals
    (the step's ``total_flops``, by default three forward passes).
    Recomputation is what lowers its peak: every order keeps all activations alive."""
    from model_ir.graph import Buffer, Graph, Op

    buffers = [Buffer("x", persistent, persistent=True), Buffer("w", persistent, persistent=True)]
    ops, prev = [], "x"
    for k in range(n):
        buffers.append(Buffer(f"a{k}", size))
        ops.append(Op(f"f{k}", inputs=[prev, "w"], outputs=[f"a{k}"], meta={"flops": flops(k)}))
        prev = f"a{k}"
    grad = None
    for k in reversed(range(n)):
        buffers.append(Buffer(f"g{k}", small, output=k == 0))
        ops.append(Op(f"b{k}", inputs=[f"a{k}"] + ([grad] if grad else []), outputs=[f"g{k}"]))
        grad = f"g{k}"
    if update:
        ops.append(Op("update", inputs=["g0"], mutates=["w"]))
    forward = sum(flops(k) for k in range(n))
    total = 3 * forward if total_flops is None else total_flops
    return Graph(buffers, ops, name="chain", meta={"flops": {"total": total, "forward": forward}})


def two_gradients(scale: int = 1) -> Graph:
    """A fused optimizer's shape: op ``v`` reads both gradients, each made from the
    activation ``a``, so the first stays alive while the second is made: every plan,
    with any recomputation, peaks at ``32 * scale`` bytes at least, while every op's
    working set (persistent ``x`` included) fits in ``24 * scale``."""
    from model_ir.graph import Buffer, Op

    return Graph([Buffer("x", 4 * scale, persistent=True), Buffer("a", 8 * scale), Buffer("g1", 10 * scale),
                  Buffer("g2", 10 * scale)],
                 [Op("f", inputs=["x"], outputs=["a"], meta={"flops": 10}), Op("p1", inputs=["a"], outputs=["g1"]),
                  Op("p2", inputs=["a"], outputs=["g2"]), Op("v", inputs=["g1", "g2"])], name="two-gradients")


def random_topological_order(graph: Graph, seed: int = 0) -> list[str]:
    """A random valid op order (each step picks a random ready op)."""
    rng = random.Random(seed)
    indeg = [len(p) for p in graph.predecessors]
    ready = [i for i, d in enumerate(indeg) if d == 0]
    order: list[str] = []
    while ready:
        i = ready.pop(rng.randrange(len(ready)))
        order.append(graph.ops[i].id)
        for s in graph.successors[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    return order
