"""Graphs shared by the model-sched tests."""

from __future__ import annotations

from model_ir.graph import Buffer, Graph, Op


def pairs_graph(k: int = 8) -> Graph:
    """``k`` independent producer/consumer pairs, listed all producers first (eager peak
    is the sum of all tensors; the optimum runs each pair back to back)."""
    buffers = [Buffer(f"t{i}", 10 * (i + 1)) for i in range(k)]
    ops = [Op(f"p{i}", outputs=[f"t{i}"]) for i in range(k)] + [Op(f"c{i}", inputs=[f"t{i}"]) for i in range(k)]
    return Graph(buffers, ops, name=f"pairs{k}")


def diamond_graph() -> Graph:
    """a -> (b, c) -> d, where the big branch should run first and be freed early."""
    buffers = [Buffer("x", 8), Buffer("a", 8), Buffer("b", 100), Buffer("b2", 4), Buffer("c", 10),
               Buffer("c2", 60), Buffer("d", 4, output=True)]
    ops = [Op("A", inputs=["x"], outputs=["a"]),
           Op("C", inputs=["a"], outputs=["c"]),
           Op("C2", inputs=["c"], outputs=["c2"]),
           Op("B", inputs=["a"], outputs=["b"]),
           Op("B2", inputs=["b"], outputs=["b2"]),
           Op("D", inputs=["b2", "c2"], outputs=["d"])]
    return Graph(buffers, ops, name="diamond")


def layered_graph(n_ops: int, width: int = 8, seed: int = 0) -> Graph:
    """A big random DAG (ops read recent buffers; some update a weight in place)."""
    import random

    rnd = random.Random(seed)
    buffers = [Buffer("w", 64, persistent=True), Buffer("x", 64)]
    ops, recent = [], ["x"]
    for i in range(n_ops):
        ins = rnd.sample(recent[-3 * width:], min(len(recent), rnd.randint(1, 3)))
        buffers.append(Buffer(f"t{i}", rnd.randint(1, 1000), output=i == n_ops - 1))
        ops.append(Op(f"op{i}", inputs=ins, outputs=[f"t{i}"], mutates=["w"] if rnd.random() < 0.03 else []))
        recent.append(f"t{i}")
    return Graph(buffers, ops, name=f"layered{n_ops}")
