"""Gradients that reach one tensor from several ops are summed in place where eager's
autograd engine sums them in place (model_ir.torch.gradient_accumulation)."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from model_ir import simulate
from model_ir.simulator import EAGER_IN_PLACE
from model_ir.torch import capture_step

SUMS = ("aten.add.Tensor", "aten.add_.Tensor")


class Residual(nn.Module):
    """Each block's input feeds the block and the skip connection: one sum per block."""

    def __init__(self, width=64, blocks=3):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))

    def forward(self, x):
        for lin in self.blocks:
            x = x + torch.relu(lin(x))
        return x


class Tied(nn.Module):
    """A language model whose output layer reuses the embedding's weight: its two
    gradients meet in the weight's buffer, the first a transposed view (kept out of
    place by eager: the view keeps its base alive)."""

    def __init__(self, vocab=97, width=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)

    def forward(self, ids):
        h = torch.tanh(self.mix(self.embed(ids)))
        return h @ self.embed.weight.t()


class Fanout(nn.Module):
    """One activation read by three ops: two sums into the first gradient that arrives."""

    def __init__(self, width=48):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) * self.c(h) + self.d(h)


class Wide(nn.Module):
    """A wide activation read twice, whose two gradients meet at the step's peak: in
    place, two of them are alive there; out of place, three."""

    def __init__(self, width=16, wide=2048):
        super().__init__()
        self.up = nn.Linear(width, wide)
        self.register_buffer("s1", torch.randn(wide))
        self.register_buffer("s2", torch.randn(wide))

    def forward(self, x):
        h = self.up(x)
        return (h * self.s1).sum() + (h * self.s2).sum()


class Symmetric(nn.Module):
    """``h + h.T``: h's two gradients are one tensor and its transposed view, which keeps
    the first's storage alive: eager sums them out of place (marked in place, the
    program executor ran ``g.add_(g.T)``, an error: input and output overlap)."""

    def __init__(self, width=16):
        super().__init__()
        self.a = nn.Linear(width, width)

    def forward(self, x):
        h = self.a(x)
        return h + h.T


def cases():
    torch.manual_seed(0)
    x = torch.randn(16, 64)
    yield "residual", Residual(), (x,), None, ()
    ids = torch.randint(0, 97, (4, 10))
    yield "tied", Tied(), (ids,), lambda out, y: nn.functional.cross_entropy(out.flatten(0, 1), y), \
        (torch.randint(0, 97, (40,)),)
    yield "fanout", Fanout(), (torch.randn(8, 48),), None, ()
    yield "wide", Wide(), (torch.randn(64, 16),), None, ()
    yield "symmetric", Symmetric(), (torch.randn(16, 16),), nn.functional.cross_entropy, (torch.randint(0, 16, (16,)),)


def eager_sums(model, inputs, loss_fn, targets) -> collections.Counter:
    """The adds eager's backward runs at the top level (the engine's sums among them), by the profiler:
    no dispatch mode, which would change the engine's choice."""
    out = model(*inputs)
    loss = loss_fn(out, *targets) if loss_fn else out.sum()
    del out
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss.backward()
    model.zero_grad(set_to_none=True)
    names = {"aten::add": "aten.add.Tensor", "aten::add_": "aten.add_.Tensor"}
    top = [e for e in prof.events() if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return collections.Counter(names[e.name] for e in top if e.name in names)


@pytest.mark.parametrize("name, model, inputs, loss_fn, targets", list(cases()), ids=[c[0] for c in cases()])
def test_captured_sums_are_in_place_where_eagers_are(name, model, inputs, loss_fn, targets):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, foreach=False)
    graph = capture_step(model, inputs, optimizer=opt, loss_fn=loss_fn, targets=targets, granularity=1).graph
    sums = [op for op in graph.ops if op.meta.get("phase") == "backward" and op.target in SUMS]
    assert all(op.target == "aten.add.Tensor" for op in sums)  # a plan may run each either way
    captured = collections.Counter("aten.add_.Tensor" if EAGER_IN_PLACE in op.meta else op.target for op in sums)
    assert captured == eager_sums(model, inputs, loss_fn, targets)
    # residual: the last sum's first gradient is out.sum()'s, expanded (not dense): out of place
    expected = {"residual": {"aten.add.Tensor": 1, "aten.add_.Tensor": 1}, "tied": {"aten.add.Tensor": 1},
                "fanout": {"aten.add_.Tensor": 2}, "wide": {"aten.add_.Tensor": 1}, "symmetric": {"aten.add.Tensor": 1}}
    assert dict(captured) == expected[name]
    for op in sums:  # eager writes a sum in place into its first input, the gradient that came first
        if EAGER_IN_PLACE in op.meta:
            assert op.meta[EAGER_IN_PLACE] == op.inputs[0] and len(op.outputs) == 1
            assert graph.buffer(op.inputs[0]).size == graph.buffer(op.outputs[0]).size


@pytest.mark.parametrize("name, model, inputs, loss_fn, targets", list(cases()), ids=[c[0] for c in cases()])
def test_the_simulated_eager_peak_is_the_measured_one(name, model, inputs, loss_fn, targets):
    """The eager step measured with the storage tracker (which lets the engine sum in place
    as it does untracked) peaks where the capture's program order does, up to a few
    scalars (the loss, the gradient's seed: an MLP with no sum shows them too); a sum out
    of place would add a gradient (``wide``: 512 KiB at its peak)."""
    from model_ir.testing.live_memory import measure_eager_live_bytes

    opt = torch.optim.SGD(model.parameters(), lr=0.1, foreach=False)
    graph = capture_step(model, inputs, optimizer=opt, loss_fn=loss_fn, targets=targets, granularity=1,
                         keep_grads=True).graph
    measured = max(measure_eager_live_bytes(model, opt, inputs, loss_fn=loss_fn, targets=targets))
    assert 0 <= simulate(graph, eager=True).peak_bytes - measured <= 16
    if name == "wide":  # the graph's own order, each buffer freed after its last use, sums out of place
        gradient = 64 * 2048 * 4
        assert gradient - 16 <= simulate(graph).peak_bytes - simulate(graph, eager=True).peak_bytes <= gradient


def test_the_tracker_sums_in_place_only_inside_backward():
    """Outside the engine's sums the storage tracker leaves ``add`` alone, and the sums it
    runs in place inside give the gradients of an untracked step (what they save is checked
    by the peak test above: ``wide``)."""
    from model_ir.testing.live_memory import _EagerTracker

    torch.manual_seed(0)
    model, x = Residual(width=8, blocks=2), torch.randn(4, 8)
    tracker, backward = _EagerTracker(), torch.Tensor.backward
    with tracker.summing(), tracker:
        a = x + x  # not a sum of the engine's: a new tensor
        assert a.data_ptr() != x.data_ptr()
        model(x).sum().backward()
    assert torch.Tensor.backward is backward  # restored
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
