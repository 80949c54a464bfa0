"""List scheduling under a target peak (model_sched.target)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir.graph import Buffer, Graph, Op
from model_ir.simulator import validate_order
from model_ir.testing.examples import random_topological_order
from model_ir.testing.strategies import graphs
from model_sched import schedule
from model_sched.bounds import descendant_masks, forced_bound
from model_sched.control import SolveControl
from model_sched.liveness import liveness, peak, timeline
from model_sched.search import exact_search
from model_sched.target import deferrable_tails, improve_by_targets, order_under, tails_last

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _random_order(g, seed):
    return [g.op_index[i] for i in random_topological_order(g, seed)]


@SETTINGS
@given(graphs(max_ops=10), st.integers(0, 1000), st.floats(0, 1))
def test_orders_under_a_target_are_valid_and_under_it(g, seed, where):
    lv = liveness(g)
    base = _random_order(g, seed)
    top = peak(lv, base)
    assert order_under(lv, base, top) == base  # its own peak: the base itself
    optimum = exact_search(lv).peak
    target = optimum + int(where * (top - optimum))
    found = order_under(lv, base, target)
    if found is not None:
        validate_order(g, found)
        assert optimum <= peak(lv, found) <= target
    assert order_under(lv, base, optimum - 1) is None  # below the optimum nothing fits


@SETTINGS
@given(graphs(max_ops=10), st.integers(0, 1000), st.booleans())
def test_bisection_never_worsens_and_stays_above_the_optimum(g, seed, with_tails):
    lv = liveness(g)
    control = SolveControl(lv)
    control.raise_bound(forced_bound(lv).bytes)
    start = _random_order(g, seed)
    control.offer(start, "start")
    tails = deferrable_tails(lv, descendant_masks(lv)) if with_tails else frozenset()
    assert improve_by_targets(lv, control, tails=tails)
    validate_order(g, control.best_order)
    assert exact_search(lv).peak <= control.best_peak == peak(lv, control.best_order) <= peak(lv, start)


def weight_gradient_stack(layers: int = 8) -> Graph:
    """A backward pass whose weight gradients (80 bytes each, consumed at once by their
    update) cannot run at the top, where every layer's saved activations (19 + 6) are
    alive: they must wait until a few layers' input gradients have freed 19 each, and
    the next ones in turn."""
    buffers = [Buffer("h0", 1)]
    ops = []
    for k in range(layers):
        buffers += [Buffer(f"w{k}", 1, persistent=True), Buffer(f"h{k + 1}", 1), Buffer(f"s{k}", 19),
                    Buffer(f"r{k}", 6)]
        ops.append(Op(f"F{k}", inputs=[f"h{k}", f"w{k}"], outputs=[f"h{k + 1}", f"s{k}", f"r{k}"]))
    buffers.append(Buffer(f"g{layers}", 1))
    ops.append(Op("loss", inputs=[f"h{layers}"], outputs=[f"g{layers}"]))
    for k in reversed(range(layers)):
        buffers += [Buffer(f"g{k}", 1), Buffer(f"dw{k}", 80)]
        ops += [Op(f"B{k}", inputs=[f"g{k + 1}", f"s{k}", f"r{k}", f"w{k}"], outputs=[f"g{k}"]),
                Op(f"W{k}", inputs=[f"g{k + 1}", f"r{k}"], outputs=[f"dw{k}"]),
                Op(f"U{k}", inputs=[f"dw{k}"], mutates=[f"w{k}"])]
    return Graph(buffers, ops, name="weight-gradient-stack")


def test_weight_gradients_wait_until_they_fit():
    g = weight_gradient_stack()
    lv = liveness(g)
    program = list(range(lv.n_ops))
    optimum = exact_search(lv).peak
    assert peak(lv, program) > optimum  # program order computes each weight gradient at once
    control = SolveControl(lv)
    control.raise_bound(forced_bound(lv).bytes)
    control.offer(program, "program")
    improve_by_targets(lv, control)
    assert control.best_peak == optimum
    order = [g.ops[v].id for v in control.best_order]
    assert order.index("W7") > order.index("B5")  # the top layer's gradient waited
    assert schedule(g, method="auto", time_limit=10).optimal


def test_targets_stop_at_the_deadline():
    g = weight_gradient_stack(20)
    lv = liveness(g)
    control = SolveControl(lv)
    control.offer(list(range(lv.n_ops)), "program")
    assert not improve_by_targets(lv, control, deadline=0.0)
    assert control.best_source == "program"


@SETTINGS
@given(graphs(max_ops=12), st.integers(0, 1000))
def test_tails_run_last_without_keeping_anything_else_alive(g, seed):
    """Deferrable tails are successor-closed and read only what they produce (or
    persistent state): moved to the end, the order stays valid and every other op runs
    with at most the live bytes it had."""
    lv = liveness(g)
    desc = descendant_masks(lv)
    tails = deferrable_tails(lv, desc)
    for v in tails:
        assert all(s in tails for s in lv.succs[v])
        assert all(lv.producer[b] in tails for b in lv.op_uses[v])
    order = _random_order(g, seed)
    moved = tails_last(order, tails)
    validate_order(g, moved)
    before = dict(zip(order, timeline(lv, order)))
    after = dict(zip(moved, timeline(lv, moved)))
    # (graph inputs nobody reads are alive at step 0 only, whichever op runs first)
    assert all(after[v] <= before[v] + (lv.first_free_bytes if v == moved[0] else 0) for v in order if v not in tails)


def adam_stack(layers: int = 6, small: int = 10, big: int = 80) -> Graph:
    """A backward pass with two weights a layer updated by Adam: the gradient (``small``
    or ``big`` bytes) is folded into persistent moments at once (``A``), then
    ``S = sqrt(moment)``, ``D = S / c`` and the parameter update ``P`` read only
    persistent state and each other: a tail that can run at any time after ``A``."""
    buffers = [Buffer("h0", 1)]
    ops = []
    for k in range(layers):
        buffers += [Buffer(f"{p}{k}", 1, persistent=True) for p in ("w", "v", "mw", "mv")]
        buffers += [Buffer(f"h{k + 1}", 1), Buffer(f"s{k}", 19), Buffer(f"r{k}", 6)]
        ops.append(Op(f"F{k}", inputs=[f"h{k}", f"w{k}", f"v{k}"], outputs=[f"h{k + 1}", f"s{k}", f"r{k}"]))
    buffers.append(Buffer(f"g{layers}", 1))
    ops.append(Op("loss", inputs=[f"h{layers}"], outputs=[f"g{layers}"]))
    for k in reversed(range(layers)):
        buffers.append(Buffer(f"g{k}", 1))
        ops.append(Op(f"B{k}", inputs=[f"g{k + 1}", f"s{k}", f"r{k}", f"w{k}", f"v{k}"], outputs=[f"g{k}"]))
        for p, size in (("v", small), ("w", big)):
            buffers += [Buffer(f"d{p}{k}", size), Buffer(f"q{p}{k}", size), Buffer(f"e{p}{k}", size)]
            ops += [Op(f"W{p}{k}", inputs=[f"g{k + 1}", f"r{k}"], outputs=[f"d{p}{k}"]),
                    Op(f"A{p}{k}", inputs=[f"d{p}{k}"], mutates=[f"m{p}{k}"]),
                    Op(f"S{p}{k}", inputs=[f"m{p}{k}"], outputs=[f"q{p}{k}"]),
                    Op(f"D{p}{k}", inputs=[f"q{p}{k}"], outputs=[f"e{p}{k}"]),
                    Op(f"P{p}{k}", inputs=[f"e{p}{k}"], mutates=[f"{p}{k}"])]
    return Graph(buffers, ops, name="adam-stack")


def test_adam_tails_run_last_so_that_the_big_gradients_fit():
    """The OPT-30B AdamW pattern: list scheduling under a target runs the small weight's
    sqrt as soon as it fits, and its result then holds the headroom the deferred big
    gradients need; with the tails last the bisection reaches the optimum."""
    g = adam_stack()
    lv = liveness(g)
    tails = deferrable_tails(lv, descendant_masks(lv))
    assert sorted(g.ops[v].id[0] for v in tails) == ["D"] * 12 + ["P"] * 12 + ["S"] * 12
    optimum = exact_search(lv).peak
    found = []
    for use in (frozenset(), tails):
        control = SolveControl(lv)
        control.raise_bound(forced_bound(lv).bytes)
        control.offer(list(range(lv.n_ops)), "program")
        assert improve_by_targets(lv, control, tails=use)
        found.append(control.best_peak)
    assert found[0] > optimum == found[1]
    assert schedule(g, method="auto", time_limit=10).optimal
