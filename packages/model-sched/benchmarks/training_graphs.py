"""Synthetic training-step graphs for the benchmark, until captured graphs land.

A forward pass is described op by op (inputs, weights, outputs, what backward
saves); :class:`StepBuilder` then appends the loss, a reverse-mode backward that
mirrors it (each backward op reads the saved activations and the gradients of its
outputs, produces the gradients of its inputs and weights; gradients reaching one
activation from several consumers are accumulated in place, as autograd does), and
an optimizer step per weight that mutates the weight and its state (persistent
buffers) in place. Program order is eager PyTorch's: forward, backward, then
``optimizer.step()``. Sizes are bytes rounded up to 512 (the CUDA allocator block).
"""

from __future__ import annotations

import random

from model_ir.graph import Buffer, Graph, Op

BLOCK = 512


def _round(n: float) -> int:
    n = max(1, int(n))
    return (n + BLOCK - 1) // BLOCK * BLOCK


class StepBuilder:
    """Collects forward ops, then emits the full training step as a :class:`Graph`."""

    def __init__(self, name: str):
        self.name = name
        self.buffers: dict[str, Buffer] = {}
        self.forward: list[tuple[str, list[str], list[str], list[str], list[str]]] = []

    def persistent(self, bid: str, size: int, kind: str) -> str:
        self.buffers[bid] = Buffer(bid, _round(size), kind=kind, persistent=True)
        return bid

    def weight(self, bid: str, size: int) -> str:
        self.persistent(bid, size, "parameter")
        self.persistent(f"{bid}.exp_avg", size, "optimizer_state")
        return bid

    def op(self, name: str, inputs: list[str], weights: list[str], outputs: dict[str, int],
           saved: list[str] | None = None) -> list[str]:
        """A forward op; ``saved``: buffers its backward reads (default: its inputs)."""
        for o, size in outputs.items():
            self.buffers[o] = Buffer(o, _round(size), kind="activation")
        self.forward.append((name, list(inputs), list(weights), list(outputs),
                             list(inputs) if saved is None else list(saved)))
        return list(outputs)

    def build(self, final: str) -> Graph:
        ops: list[Op] = []
        for name, inputs, weights, outputs, _ in self.forward:
            ops.append(Op(name, inputs=inputs + weights, outputs=outputs, target=f"fwd.{name}"))
        self.buffers["loss"] = Buffer("loss", BLOCK, kind="output", output=True)
        ops.append(Op("loss", inputs=[final, "target"], outputs=["loss"], target="loss"))
        grads: dict[str, str] = {}
        gsize = lambda b: self.buffers[b].size  # noqa: E731
        seed = f"grad.{final}"
        self.buffers[seed] = Buffer(seed, gsize(final), kind="gradient")
        ops.append(Op("loss.backward", inputs=["loss", final, "target"], outputs=[seed], target="loss_bwd"))
        grads[final] = seed
        activations = {o for _, _, _, outs, _ in self.forward for o in outs}
        for name, inputs, weights, outputs, saved in reversed(self.forward):
            g_out = [grads[o] for o in outputs if o in grads]
            if not g_out:
                continue
            outs, accum = [], []
            for b in [i for i in inputs if i in activations] + weights:
                gid = f"grad.{b}.from.{name}"
                self.buffers[gid] = Buffer(gid, gsize(b), kind="gradient")
                outs.append(gid)
                if b in grads:
                    accum.append((grads[b], gid))
                else:
                    grads[b] = gid
            ops.append(Op(f"{name}.backward", inputs=g_out + [s for s in saved if s not in g_out]
                          + [w for w in weights if w not in saved], outputs=outs, target=f"bwd.{name}"))
            for k, (total, part) in enumerate(accum):
                ops.append(Op(f"{name}.backward.acc{k}", inputs=[part], mutates=[total], target="add_"))
        for w in sorted(b for b in self.buffers if self.buffers[b].kind == "parameter"):
            if w in grads:
                ops.append(Op(f"adam.{w}", inputs=[grads[w]], mutates=[w, f"{w}.exp_avg"], target="adam"))
        return Graph(list(self.buffers.values()), ops, name=self.name)


def resnet_like(blocks: int = 8, batch: int = 32, seed: int = 0) -> Graph:
    """A ResNet-style step: stem, ``blocks`` residual blocks (conv-bn-relu-conv-bn-add-relu)
    in four stages that halve the resolution and double the channels."""
    rnd = random.Random(seed)
    sb = StepBuilder(f"resnet_like_{blocks}")
    sb.persistent("input", batch * 3 * 224 * 224 * 4, "input")
    sb.persistent("target", batch * 8, "input")
    c, s = 64, 56
    sb.weight("stem.w", 3 * 64 * 49 * 4)
    (h,) = sb.op("stem", ["input"], ["stem.w"], {"stem.out": batch * c * s * s * 4})
    per_stage = max(1, blocks // 4)
    for i in range(blocks):
        if i and i % per_stage == 0 and s > 7:
            c, s = c * 2, s // 2
        act = batch * c * s * s * 4 * rnd.uniform(0.9, 1.1)
        w = c * c * 9 * 4
        p = f"b{i}"
        sb.weight(f"{p}.conv1.w", w)
        sb.weight(f"{p}.conv2.w", w)
        (c1,) = sb.op(f"{p}.conv1", [h], [f"{p}.conv1.w"], {f"{p}.c1": act})
        (n1,) = sb.op(f"{p}.bn1", [c1], [], {f"{p}.n1": act})
        (r1,) = sb.op(f"{p}.relu1", [n1], [], {f"{p}.r1": act}, saved=[f"{p}.r1"])
        (c2,) = sb.op(f"{p}.conv2", [r1], [f"{p}.conv2.w"], {f"{p}.c2": act})
        (n2,) = sb.op(f"{p}.bn2", [c2], [], {f"{p}.n2": act})
        if sb.buffers[h].size != sb.buffers[n2].size:
            sb.weight(f"{p}.down.w", c * c // 2 * 4)
            (h,) = sb.op(f"{p}.down", [h], [f"{p}.down.w"], {f"{p}.ds": act})
        (a,) = sb.op(f"{p}.add", [n2, h], [], {f"{p}.sum": act}, saved=[])
        (h,) = sb.op(f"{p}.relu2", [a], [], {f"{p}.out": act}, saved=[f"{p}.out"])
    sb.weight("fc.w", c * 1000 * 4)
    (pool,) = sb.op("pool", [h], [], {"pool.out": batch * c * 4})
    (logits,) = sb.op("fc", [pool], ["fc.w"], {"logits": batch * 1000 * 4})
    return sb.build(logits)


def transformer_like(layers: int = 4, batch: int = 32, seq: int = 128, hidden: int = 768,
                     heads: int = 12, seed: int = 0) -> Graph:
    """A BERT/GPT-style step: embedding, ``layers`` blocks (attention with S x S
    scores, MLP with 4x expansion, residuals and layer norms), a head."""
    sb = StepBuilder(f"transformer_like_{layers}")
    sb.persistent("input", batch * seq * 8, "input")
    sb.persistent("target", batch * seq * 8, "input")
    act = batch * seq * hidden * 4
    att = batch * heads * seq * seq * 4
    sb.weight("embed.w", 30522 * hidden * 4)
    (h,) = sb.op("embed", ["input"], ["embed.w"], {"embed.out": act})
    for i in range(layers):
        p = f"l{i}"
        for w, size in (("qkv", 3 * hidden * hidden), ("proj", hidden * hidden),
                        ("up", 4 * hidden * hidden), ("down", 4 * hidden * hidden)):
            sb.weight(f"{p}.{w}.w", size * 4)
        q, k, v = sb.op(f"{p}.qkv", [h], [f"{p}.qkv.w"], {f"{p}.q": act, f"{p}.k": act, f"{p}.v": act})
        (sc,) = sb.op(f"{p}.scores", [q, k], [], {f"{p}.scores": att})
        (pr,) = sb.op(f"{p}.softmax", [sc], [], {f"{p}.probs": att}, saved=[f"{p}.probs"])
        (ctx,) = sb.op(f"{p}.context", [pr, v], [], {f"{p}.ctx": act})
        (o,) = sb.op(f"{p}.proj", [ctx], [f"{p}.proj.w"], {f"{p}.attn": act})
        (r,) = sb.op(f"{p}.add1", [o, h], [], {f"{p}.res1": act}, saved=[])
        (n,) = sb.op(f"{p}.ln1", [r], [], {f"{p}.ln1": act})
        (u,) = sb.op(f"{p}.up", [n], [f"{p}.up.w"], {f"{p}.up": 4 * act})
        (gl,) = sb.op(f"{p}.gelu", [u], [], {f"{p}.gelu": 4 * act})
        (d,) = sb.op(f"{p}.down", [gl], [f"{p}.down.w"], {f"{p}.down": act})
        (r2,) = sb.op(f"{p}.add2", [d, n], [], {f"{p}.res2": act}, saved=[])
        (h,) = sb.op(f"{p}.ln2", [r2], [], {f"{p}.out": act})
    sb.weight("head.w", hidden * 30522 * 4 // 8)
    (logits,) = sb.op("head", [h], ["head.w"], {"logits": batch * seq * 30522 * 4 // 8})
    return sb.build(logits)


def random_layered(n_ops: int, seed: int = 0, width: int = 6, max_size: int = 1 << 20) -> Graph:
    """A random DAG of ``n_ops`` ops in layers of up to ``width``; each op reads 1-3
    recent buffers, some ops update a persistent weight in place."""
    rnd = random.Random(seed)
    buffers = [Buffer("w", 4096, kind="parameter", persistent=True), Buffer("x", 4096, kind="input")]
    ops: list[Op] = []
    recent = ["x"]
    for i in range(n_ops):
        k = min(len(recent), rnd.randint(1, 3))
        ins = rnd.sample(recent[-3 * width:], k)
        out = f"t{i}"
        buffers.append(Buffer(out, _round(rnd.randint(1, max_size)), kind="activation",
                              output=(i == n_ops - 1)))
        mut = ["w"] if rnd.random() < 0.05 else []
        ops.append(Op(f"op{i}", inputs=ins, outputs=[out], mutates=mut))
        recent.append(out)
    return Graph(buffers, ops, name=f"random_layered_{n_ops}_{seed}")


def random_program(n_ops: int, seed: int = 0, max_size: int = 100) -> Graph:
    """The random family of ``model_ir.testing.strategies.graphs`` with a seed instead of
    Hypothesis: each op reads up to 3 earlier buffers, makes 0-3 outputs, sometimes
    mutates an earlier buffer in place or must follow an earlier op."""
    rnd = random.Random(seed)
    buffers = [Buffer(f"w{i}", rnd.randint(0, max_size), kind="parameter", persistent=True)
               for i in range(rnd.randint(0, 2))]
    buffers += [Buffer(f"x{i}", rnd.randint(0, max_size), kind="input") for i in range(rnd.randint(0, 2))]
    available = [b.id for b in buffers]
    ops: list[Op] = []
    outputs: set[str] = set()
    for k in range(n_ops):
        ins = rnd.sample(available, min(len(available), rnd.randint(0, 3)))
        outs = [f"b{k}_{j}" for j in range(rnd.randint(0 if k else 1, 3))]
        muts = [rnd.choice(available)] if available and rnd.randint(0, 4) == 0 else []
        after = [rnd.choice(ops).id] if ops and rnd.randint(0, 4) == 0 else []
        for o in outs:
            buffers.append(Buffer(o, rnd.randint(0, max_size), kind="activation"))
            if rnd.randint(0, 7) == 0:
                outputs.add(o)
        ops.append(Op(f"op{k}", inputs=ins, outputs=outs, mutates=muts, after=after))
        available.extend(outs)
    buffers = [Buffer(b.id, b.size, kind=b.kind, persistent=b.persistent, output=b.id in outputs)
               for b in buffers]
    return Graph(buffers, ops, name=f"random_program_{n_ops}_{seed}")
