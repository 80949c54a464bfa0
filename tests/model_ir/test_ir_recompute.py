"""Recomputation in the IR and the one simulator: an order may run an op again."""

import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model_ir import Buffer, Graph, Op, ScheduleError, simulate, working_set_bound
from model_ir.recompute import instance_id, recomputable_ops, recompute_flops, recomputations
from model_ir.simulator import _simulate_instances, simulate_indices, timeline_indices, validate_order
from model_ir.testing.strategies import graphs, topological_orders


def chain() -> Graph:
    """A forward chain a -> b -> c, a loss, and a backward pass reading a, b, c back."""
    mib = 1 << 20
    buffers = [Buffer("w", 8, persistent=True), Buffer("x", 8, persistent=True)]
    buffers += [Buffer(n, 100 * mib) for n in ("a", "b", "c")]
    buffers += [Buffer(n, mib) for n in ("gc", "gb")] + [Buffer("ga", mib, output=True)]
    ops = [
        Op("f1", inputs=["x", "w"], outputs=["a"], meta={"flops": 10}),
        Op("f2", inputs=["a"], outputs=["b"], meta={"flops": 20}),
        Op("f3", inputs=["b"], outputs=["c"], meta={"flops": 30}),
        Op("g3", inputs=["c"], outputs=["gc"]),
        Op("g2", inputs=["gc", "b"], outputs=["gb"]),
        Op("g1", inputs=["gb", "a"], outputs=["ga"]),
        Op("update", inputs=["ga"], mutates=["w"]),
    ]
    return Graph(buffers, ops, name="chain")


def test_a_recomputation_frees_a_buffer_until_its_next_use():
    g = chain()
    plain = simulate(g)
    # Run f1 again just before g1: a's first instance dies after f2, its second lives for g1.
    order = ["f1", "f2", "f3", "g3", "g2", "f1", "g1", "update"]
    again = simulate(g, order)
    lt = {x.id: (x.start, x.end) for x in again.lifetimes}
    assert lt["a"] == (0, 2) and lt[instance_id("a", 2)] == (5, 7)
    assert again.peak_bytes < plain.peak_bytes
    assert again.peak_bytes >= working_set_bound(g)
    idx = [g.op_index[o] for o in order]
    assert recomputations(idx) == [(5, 0)] and recompute_flops(g, idx) == 10


def test_invalid_recomputations_are_refused():
    g = chain()
    with pytest.raises(ScheduleError, match="twice"):  # g3 is fine to rerun, update writes w
        simulate(g, ["f1", "f2", "f3", "g3", "g2", "g1", "update", "update"])
    with pytest.raises(ScheduleError, match="wrote its input 'w'"):  # f1 reads w after its update
        simulate(g, ["f1", "f2", "f3", "g3", "g2", "g1", "update", "f1"])
    with pytest.raises(ScheduleError, match="has 6 ops, graph .chain. has 7"):
        simulate(g, ["f1", "f2", "f3", "g3", "g2", "g1"])
    with pytest.raises(ScheduleError, match="runs op 'g1' twice and never runs op 'update'"):
        simulate(g, ["f1", "f2", "f3", "g3", "g2", "g1", "g1"])


def test_what_may_run_again():
    g = Graph(
        [Buffer("x", 4), Buffer("a", 4), Buffer("b", 4), Buffer("r", 4), Buffer("s", 4),
         Buffer("o", 4, output=True)],
        [Op("p", inputs=["x"], outputs=["a"]), Op("inplace", mutates=["a"]),
         Op("rand", inputs=["x"], outputs=["r"], meta={"random": True}), Op("q", inputs=["x"], outputs=["b"]),
         Op("replay", inputs=["x"], outputs=["s"], meta={"random": True, "replays_rng": True}),
         Op("out", inputs=["b", "r", "s"], outputs=["o"])],
    )
    # p's output is written in place, rand draws random numbers it cannot replay, inplace
    # allocates nothing, out makes a step output: only q and replay may run again.
    assert recomputable_ops(g) == frozenset({g.op_index["q"], g.op_index["replay"]})
    with pytest.raises(ScheduleError, match="cannot replay"):
        simulate(g, ["p", "inplace", "rand", "q", "replay", "rand", "out"])


@st.composite
def recomputed_orders(draw):
    g = draw(graphs(max_ops=10))
    order = list(next(iter(topological_orders(g, limit=1))))
    allowed = sorted(recomputable_ops(g))
    assume(allowed)
    rng = random.Random(draw(st.integers(0, 2**16)))
    for _ in range(draw(st.integers(1, 4))):
        i = rng.choice(allowed)
        first = order.index(i)
        order.insert(rng.randint(first + 1, len(order)), i)
    try:
        validate_order(g, order)
    except ScheduleError as e:
        assume("wrote its input" not in str(e))
        raise
    return g, order


@given(recomputed_orders())
@settings(max_examples=150, deadline=None)
def test_every_use_reads_a_live_instance(case):
    g, order = case
    p = simulate_indices(g, order)
    again = recomputations(order)
    assert len(p.lifetimes) == sum(not b.persistent for b in g.buffers) + sum(
        len(g.ops[i].outputs) for _, i in again)
    assert len({lt.id for lt in p.lifetimes}) == len(p.lifetimes)
    assert p.peak_bytes >= working_set_bound(g)
    by_buffer: dict[str, list] = {}
    for lt in p.lifetimes:
        by_buffer.setdefault(lt.id.split("@")[0], []).append(lt)
    for t, i in enumerate(order):
        op = g.ops[i]
        for b in op.uses:
            if g.buffer(b).persistent:
                continue
            # The most recent instance made at or before t is alive at t.
            latest = max((lt for lt in by_buffer[b] if lt.start <= t), key=lambda lt: lt.start)
            assert latest.start <= t < latest.end
        for b in op.outputs:
            assert any(lt.start == t for lt in by_buffer[b])
        assert p.timeline[t] >= g.persistent_bytes + sum(
            g.buffer(b).size for b in set(op.uses) | set(op.outputs) if not g.buffer(b).persistent)


@given(recomputed_orders())
@settings(max_examples=100, deadline=None)
def test_the_timeline_alone_is_the_simulated_timeline(case):
    g, order = case
    assert timeline_indices(g, order) == simulate_indices(g, order).timeline
    plain = order[:len(g.ops)] if len(set(order[:len(g.ops)])) == len(g.ops) else None
    if plain is not None:
        assert timeline_indices(g, plain) == simulate_indices(g, plain).timeline


@given(graphs(max_ops=10))
@settings(max_examples=100, deadline=None)
def test_instances_agree_with_the_plain_simulation_without_recomputation(g):
    order = list(next(iter(topological_orders(g, limit=1))))
    a, b = simulate_indices(g, order), _simulate_instances(g, order)
    assert a.timeline == b.timeline
    assert sorted(map(tuple, (attrs_tuple(x) for x in a.lifetimes))) == sorted(attrs_tuple(x) for x in b.lifetimes)


def attrs_tuple(lt):
    return (lt.id, lt.start, lt.end, lt.size)


@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_without_dropout_may_be_recomputed(p):
    torch = pytest.importorskip("torch")
    from model_ir.torch import capture_step

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).reshape(2, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p)

    step = capture_step(Attention(), torch.randn(2, 4, 8))
    allowed = recomputable_ops(step.graph)
    if p == 0:  # the fused kernel: seeded, but no dropout, so the same values when run again
        attention = [i for i, op in enumerate(step.graph.ops) if "scaled_dot_product" in str(op.target)
                     and op.meta["phase"] == "forward"]
        assert attention and all(i in allowed and not step.graph.ops[i].meta.get("random") for i in attention)
    else:  # dropout draws random numbers: never run again
        drawn = [i for i, op in enumerate(step.graph.ops) if op.meta.get("random")]
        assert drawn and not any(i in allowed for i in drawn)


def runs_as_eager(step, model, opt, ref, ref_opt, make_batch, steps: int = 3) -> None:
    """``step.run`` (the captured graph) gives eager's losses and state, bitwise."""
    import torch

    from model_ir.testing.torch_models import assert_same_state, eager_step

    for _ in range(steps):
        x = make_batch()
        (loss,) = step.run(model, opt, x)
        assert torch.equal(loss, eager_step(ref, ref_opt, x))
    assert_same_state(model, opt, ref, ref_opt)


def test_in_place_activations_become_functional_under_a_budget():
    """ReLU(inplace=True) after batch norm blocks recomputing the batch norm; captured
    with functional_inplace, the step has relu instead of relu_, more recomputable ops,
    and the same results (CapturedStep.run, three steps, bitwise eager)."""
    torch = pytest.importorskip("torch")
    import copy

    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import capture_step

    torch.manual_seed(0)
    model = small_cnn()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 16, 16)
    plain = capture_step(copy.deepcopy(model), x, optimizer=None)
    step = capture_step(model, x, optimizer=opt, functional_inplace=True)
    forward = [op for op in step.graph.ops if op.meta["phase"] == "forward"]
    assert not any(op.target == "aten.relu_.default" for op in forward)
    assert any(op.target == "aten.relu.default" for op in forward)
    assert step.graph.meta["functional_inplace"] is True
    assert len(recomputable_ops(step.graph)) > len(recomputable_ops(plain.graph))
    runs_as_eager(step, model, opt, ref, ref_opt, lambda: torch.randn(4, 3, 16, 16))


def test_dropout_keeps_a_boolean_mask_under_a_budget():
    """CPU dropout draws a float noise in place; captured with functional_inplace, the
    draw is functional and replays its numbers when recomputed, a one-byte mask of it
    is taken and the noise is recomputable from the mask, with the same results
    (CapturedStep.run, three steps, the same seeds, bitwise eager)."""
    torch = pytest.importorskip("torch")
    import copy

    from model_ir.testing.torch_models import TransformerBlock, assert_same_state, eager_step
    from model_ir.torch import capture_step

    torch.manual_seed(0)
    model = TransformerBlock(32, 4, dropout=0.1)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    x = torch.randn(4, 16, 32)
    plain = capture_step(copy.deepcopy(model), x)
    step = capture_step(model, x, optimizer=opt, functional_inplace=True)
    g = step.graph
    allowed = recomputable_ops(g)
    draws = [op for op in g.ops if op.meta.get("random")]
    masks = [op for op in g.ops if op.target == "aten.ne.Scalar"]
    noise = [i for i, op in enumerate(g.ops) if op.target == "aten.div.Scalar" and op.meta["phase"] == "forward"
             and g.ops[g.producer[g.buffer_index[op.inputs[0]]]].target == "aten._to_copy.default"]
    assert len(draws) == len(masks) == len(noise) == 3  # attention, projection, MLP
    assert all(g.buffer(m.outputs[0]).dtype == "bool" for m in masks)
    assert all(i in allowed for i in noise)
    assert all(op.target == "aten.bernoulli.p" and op.meta.get("replays_rng") and g.op_index[op.id] in allowed
               for op in draws)
    # A draw reads only a scalar (for its shape): rerunning it needs no activation.
    assert all(g.buffer(b).size <= g.meta["granularity"] for op in draws for b in op.inputs)
    assert not any(op.target == "aten.div_.Scalar" and op.meta["phase"] == "forward" for op in g.ops)
    assert any(op.target == "aten.div_.Scalar" for op in plain.graph.ops)
    in_place = [op for op in plain.graph.ops if op.meta.get("random")]
    assert in_place and not any(op.meta.get("replays_rng") for op in in_place)
    # The drawn float noise dies once its mask is taken, long before the backward pass.
    lifetimes = {lt.id: lt for lt in simulate(g).lifetimes}
    for d, m in zip(draws, masks):
        assert lifetimes[d.outputs[0]].end == g.op_index[m.id] + 1
    for i in range(3):
        x = torch.randn(4, 16, 32)
        torch.manual_seed(10 + i)
        (loss,) = step.run(model, opt, x)
        torch.manual_seed(10 + i)
        assert torch.equal(loss, eager_step(ref, ref_opt, x)), i
    assert_same_state(model, opt, ref, ref_opt)


def _noisy_model(generator=None):
    torch = pytest.importorskip("torch")

    class Noisy(torch.nn.Module):
        """A random op with no tensor argument (drop-path style), optionally with a generator."""

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            noise = torch.rand(x.shape[0], 8, device=x.device, generator=generator)
            return self.lin(x) * noise

    return Noisy()


@pytest.mark.parametrize("recomputed", ["rand", "dropout"])
def test_a_recomputed_draw_replays_eager_numbers(recomputed):
    """A replayed random op run again gives its first run's numbers and leaves the
    generator where eager leaves it: the reorder executor, an order that reruns the draw
    before its backward use, three steps bitwise eager (rand with no tensor argument,
    and dropout with its default p = 0.5, captured with functional_inplace)."""
    torch = pytest.importorskip("torch")
    import copy

    from model_ir.testing.torch_models import assert_same_state, eager_step
    from model_ir.torch import capture_step

    torch.manual_seed(0)
    if recomputed == "rand":
        model, target = _noisy_model(), "aten.rand.generator"  # (generator=None)
    else:
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(), torch.nn.Linear(8, 8))
        target = "aten.bernoulli.p"
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    step = capture_step(model, torch.randn(4, 8), optimizer=opt, functional_inplace=True)
    g = step.graph
    (draw,) = [op for op in g.ops if op.target == target]
    assert draw.meta.get("random") and draw.meta.get("replays_rng")
    d = g.op_index[draw.id]
    first_backward = next(i for i, op in enumerate(g.ops) if op.meta["phase"] == "backward")
    order = list(range(len(g.ops)))
    order.insert(first_backward, d)  # the draw again, before the backward pass reads its output
    assert recomputations(order) == [(first_backward, d)]
    order = [g.ops[i].id for i in order]
    for i in range(3):
        x = torch.randn(4, 8)
        torch.manual_seed(20 + i)
        (loss,) = step.run(model, opt, x, order=order)
        after = torch.rand(1)  # the generator is where eager leaves it
        torch.manual_seed(20 + i)
        assert torch.equal(loss, eager_step(ref, ref_opt, x)), i
        assert torch.equal(after, torch.rand(1))
    assert_same_state(model, opt, ref, ref_opt)


def test_a_draw_from_a_given_generator_is_not_replayed():
    torch = pytest.importorskip("torch")
    from model_ir.torch import capture_step

    from model_ir.torch import CaptureError

    try:
        step = capture_step(_noisy_model(torch.Generator().manual_seed(3)), torch.randn(4, 8))
    except CaptureError as e:  # torch 2.11's make_fx cannot trace a generator argument
        if "Generator" not in str(e):
            raise
        pytest.skip(f"this torch cannot capture a generator argument: {e}")
    (draw,) = [op for op in step.graph.ops if op.target == "aten.rand.generator"]
    assert draw.meta.get("random") and not draw.meta.get("replays_rng")
    assert step.graph.op_index[draw.id] not in recomputable_ops(step.graph)


def test_clones_of_in_place_inputs_are_dropped_once_the_write_is_functional():
    """SiLU(inplace=True)'s backward needs its input, so autograd saves a clone before
    the write; with the write made functional nothing overwrites the input, and the
    backward reads it instead (EfficientNet-B0 under a budget: the recomputation search
    stalled at 64% of the transient peak, as every SiLU output and its input's clone
    could only be recomputed one at a time; now 45%). Same results, bitwise."""
    torch = pytest.importorskip("torch")
    import copy

    from model_ir.torch import capture_step

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(inplace=True),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(inplace=True),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 8, 8)
    plain = capture_step(copy.deepcopy(model), x, optimizer=None)
    assert sum(op.target == "aten.clone.default" for op in plain.graph.ops) == 2  # eager's saved inputs
    step = capture_step(model, x, optimizer=opt, functional_inplace=True)
    assert not any(op.target == "aten.clone.default" for op in step.graph.ops)
    runs_as_eager(step, model, opt, ref, ref_opt, lambda: torch.randn(4, 3, 8, 8))


def test_clones_that_differ_from_their_source_are_kept():
    """A clone is dropped only where it is its source: not where either is written in
    place (directly, through a view or in a list of tensors), laid out otherwise, a graph
    input's, or a view's of a larger storage (which reading it would keep alive)."""
    torch = pytest.importorskip("torch")
    from torch.fx.experimental.proxy_tensor import make_fx

    from model_ir.torch.functional_inplace import drop_redundant_clones

    def f(x):
        a, b, c, d = x * 2, x * 3, x * 4, x * 5
        same = a.clone()
        written = b.clone()
        written.add_(1)
        source_written = c.clone()
        c.view(-1).mul_(2)
        other_layout = d.clone(memory_format=torch.channels_last)
        of_input = x.clone()
        part = (x * 6)[:1].clone()  # its source is a view of a larger storage
        e = x * 7
        listed = e.clone()
        torch._foreach_mul_([e], 2.0)  # written as an element of a list (gradient clipping)
        return same + 1, written, source_written + c, other_layout + 1, of_input + 1, part + 1, listed + e

    gm = make_fx(f, tracing_mode="fake")(torch.randn(2, 3, 4, 4))
    clones = [n for n in gm.graph.nodes if n.target is torch.ops.aten.clone.default]
    sources = [n.args[0].name for n in clones]
    assert len(clones) == 7
    assert drop_redundant_clones(gm) == 1
    kept = [n.args[0].name for n in gm.graph.nodes if n.target is torch.ops.aten.clone.default]
    assert kept == sources[1:]  # a's clone went
    x = torch.randn(2, 3, 4, 4)
    for got, want in zip(gm(x), f(x)):
        assert torch.equal(got, want)
