"""Memory budgets: schedule(memory_budget=...) and the recomputation greedy."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model_ir import Buffer, Graph, Op, simulate, working_set_bound
from model_ir.recompute import recompute_flops
from model_ir.simulator import simulate_indices, validate_order
from model_ir.testing.strategies import graphs
from model_ir.testing.examples import training_chain
from model_sched import schedule
from model_sched.errors import SchedError
from model_sched.recompute import fit_budget
from model_sched.recompute_exact import recompute_lower_bound


def chain(n: int = 4, size: int = 100) -> Graph:
    """A forward chain of n ops whose activations the backward pass reads in reverse."""
    return training_chain(n, size=size)


def test_a_budget_below_every_order_is_met_by_recomputation():
    g = chain()
    plain = schedule(g, time_limit=5)
    budget = plain.peak_bytes - 150
    events = []
    r = schedule(g, memory_budget=budget, time_limit=5, progress=events.append)
    assert r.method == "recompute" and r.fits_budget and r.peak_bytes <= budget
    assert all(e.lower_bound_bytes <= e.best_peak_bytes for e in events)
    assert r.reorder_lower_bound_bytes == plain.lower_bound_bytes > budget  # proof that reordering cannot
    assert r.lower_bound_bytes == working_set_bound(g) <= r.peak_bytes
    assert r.recomputed_ops > 0 and r.recompute_flops > 0
    assert simulate(g, r.order).peak_bytes == r.peak_bytes
    d = r.to_dict()
    assert d["fits_budget"] is True and d["recompute_flops"] == r.recompute_flops


def test_a_budget_reports_what_the_search_proved_of_orders():
    """The order search under a budget proves every order peaks at 9 B (the unread input
    is alive at the first step); the forced-liveness bound (8 B) and the bound with
    recomputation (8 B: the working set of f) say less. The budget's answer gave the
    forced-liveness bound as what no order goes below."""
    g = Graph([Buffer("unread", 1), Buffer("x", 4), Buffer("y", 4, output=True)],
              [Op("f", inputs=["x"], outputs=["y"])])
    plain = schedule(g, time_limit=5)
    assert plain.optimal and plain.lower_bound_bytes == 9
    r = schedule(g, memory_budget=1, time_limit=5)
    assert not r.fits_budget and r.lower_bound_bytes == 8
    assert r.reorder_lower_bound_bytes == 9


def test_a_budget_any_order_meets_needs_no_recomputation():
    g = chain()
    plain = schedule(g, time_limit=5)
    r = schedule(g, memory_budget=plain.peak_bytes, time_limit=5)
    assert r.fits_budget and r.recomputed_ops == 0 and r.recompute_flops == 0


def test_a_budget_under_the_working_sets_is_refused_with_the_bound():
    g = chain()
    bound = working_set_bound(g)
    r = schedule(g, memory_budget=bound - 1, time_limit=5)
    assert r.fits_budget is False and r.lower_bound_bytes == bound > r.memory_budget
    fit = fit_budget(g, list(range(len(g.ops))), bound - 1)
    assert not fit.fits and "no order fits" in fit.reason
    # the lowest peak found is shown: what the greedy reaches aiming at the bound itself
    at_bound = fit_budget(g, list(range(len(g.ops))), bound)
    assert fit.peak_bytes == at_bound.peak_bytes < simulate(g).peak_bytes and fit.recomputed_ops


@given(graphs(max_ops=12), st.integers(1, 4096))
@settings(max_examples=80, deadline=None)
def test_a_budget_below_the_bound_gets_the_lowest_peak_the_greedy_finds(g, under):
    """Below the working-set bound nothing fits, and the answer is the greedy's aiming
    at the bound (before: the start order, with no recomputation tried)."""
    order, bound = list(range(len(g.ops))), working_set_bound(g)
    assume(bound > 1)
    fit = fit_budget(g, order, bound - min(under, bound - 1), max_moves=50)
    at_bound = fit_budget(g, order, bound, max_moves=50)
    assert not fit.fits and "no order fits" in fit.reason
    assert fit.order == at_bound.order and fit.peak_bytes == at_bound.peak_bytes >= bound


def test_the_cheapest_recomputation_is_chosen():
    # Freeing any one activation closes the gap: the cheapest producer (f0) runs again.
    g = chain()
    order = list(range(len(g.ops)))
    peak = simulate_indices(g, order).peak_bytes
    fit = fit_budget(g, order, peak - 100)
    assert fit.fits and fit.recomputed_ops == 1
    assert fit.recompute_flops == 1000


def test_needless_recomputations_are_dropped():
    """A rerun nobody reads, and a costly rerun the budget does not need, are removed;
    the one the budget needs stays."""
    from model_sched.recompute import _drop_needless

    g = chain()
    order = list(range(len(g.ops)))
    peak = simulate_indices(g, order).peak_bytes
    fit = fit_budget(g, order, peak - 100)
    assert fit.recompute_flops == 1000  # f0 again before b0
    f0, f3, b3 = g.op_index["f0"], g.op_index["f3"], g.op_index["b3"]
    padded = list(fit.order)
    padded.insert(padded.index(b3) + 1, f3)  # f3 again after its last reader: nobody reads it
    padded.insert(padded.index(b3), f3)  # f3 again just before its reader: needless (f3 is alive)
    padded.insert(len(padded) - 1, f0)  # f0 a third time before the update: nobody reads it
    validate_order(g, padded)
    assert recompute_flops(g, padded) == 1000 + 2 * 4000 + 1000
    order, top = _drop_needless(g, padded, peak - 100, None)
    assert order == list(fit.order) and top == simulate_indices(g, order).peak_bytes <= peak - 100


def test_a_fitting_answer_is_made_cheaper():
    """fit_budget_from swaps the greedy's costliest reruns for cheaper ones (_cheapen):
    here 20400 recomputed FLOPs become 11202, still within the budget."""
    from model_sched.recompute import fit_budget_from

    flops = [5000, 100, 100, 5000, 1, 1000]
    g = training_chain(6, flops=lambda k: flops[k])
    order = list(range(len(g.ops)))
    greedy = fit_budget(g, order, 316)
    better = fit_budget_from(g, [order], 316)
    assert greedy.fits and greedy.recompute_flops == 20400
    assert better.fits and better.recompute_flops == 11202
    validate_order(g, list(better.order))
    assert simulate_indices(g, better.order).peak_bytes == better.peak_bytes <= 316
    assert recompute_flops(g, better.order) == better.recompute_flops
    assert better.recomputed_ops == len(better.order) - len(g.ops)


def late_updates(n: int = 4) -> Graph:
    """A training chain whose weight gradients (150 B each) are made by backward ops that
    cannot run again and read by updates that eager runs after the whole backward pass."""
    from model_ir import Buffer, Op

    bufs = [Buffer("x", 8, persistent=True)] + [Buffer(f"w{k}", 8, persistent=True) for k in range(n)]
    ops, prev, grad = [], "x", None
    for k in range(n):
        bufs.append(Buffer(f"a{k}", 100))
        ops.append(Op(f"f{k}", inputs=[prev, f"w{k}"], outputs=[f"a{k}"], meta={"flops": 1000}))
        prev = f"a{k}"
    for k in reversed(range(n)):
        bufs += [Buffer(f"ga{k}", 1, output=k == 0), Buffer(f"gw{k}", 150)]
        ops.append(Op(f"b{k}", inputs=[f"a{k}", f"w{k}"] + ([grad] if grad else []),
                      outputs=[f"ga{k}", f"gw{k}"], meta={"random": True}))
        grad = f"ga{k}"
    ops += [Op(f"u{k}", inputs=[f"gw{k}"], mutates=[f"w{k}"], meta={"phase": "optimizer"}) for k in range(n)]
    return Graph(bufs, ops, name="late_updates", meta={"flops": {"forward": 1000 * n, "total": 3000 * n}})


def test_recomputation_starts_from_updates_right_after_their_gradients():
    """Recomputation moves the peak to the end of the backward pass, where eager's late
    updates keep every gradient: no rerun helps from program order, the order with each
    update after its gradient fits, and the recompute scheduler starts from it too."""
    from model_sched import greedy
    from model_sched.liveness import liveness

    g = late_updates()
    program = list(range(len(g.ops)))
    assert not fit_budget(g, program, 400).fits
    interleaved = greedy.optimizer_in_backward_order(liveness(g), greedy.optimizer_ops(g))
    assert fit_budget(g, interleaved, 400).fits
    r = schedule(g, method="recompute", memory_budget=400, time_limit=5)
    assert r.fits_budget and simulate(g, r.order).peak_bytes == r.peak_bytes <= 400


def test_a_weight_decay_run_early_does_not_block_recomputing_the_forward_pass():
    """AdamW decays each weight in place (``w.mul_(1 - lr * wd)``) before its update; that
    op frees and allocates nothing, so the best order may run it right after the forward
    pass's last read of ``w``, and then no forward op reading ``w`` could run again. The
    greedy moves it to just before the update: the cheapest rerun fits, as without it."""
    from model_ir import Op

    plain = chain()
    ops = list(plain.ops)
    ops.insert(len(ops) - 1, Op("decay", mutates=["w"]))  # in the optimizer step, before the update
    g = Graph(plain.buffers, ops, name="chain+decay", meta=plain.meta)
    early = [g.op_index[o] for o in ("f0", "f1", "f2", "f3", "decay", "b3", "b2", "b1", "b0", "update")]
    validate_order(g, early)
    peak = simulate_indices(g, early).peak_bytes
    fit = fit_budget(g, early, peak - 100)
    assert fit.fits and fit.recomputed_ops == 1 and fit.recompute_flops == 1000  # f0 again, as in chain()
    assert fit.order.index(g.op_index["decay"]) == len(fit.order) - 2  # just before the update
    validate_order(g, list(fit.order))


@given(graphs(max_ops=10), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_deferring_neutral_writes_keeps_the_order_valid_and_its_peak(g, rnd):
    """Any valid order, its neutral writes deferred: still valid, the same ops, the same
    peak (but for an unused input's first step)."""
    from itertools import islice

    from model_ir.testing.strategies import topological_orders
    from model_sched.recompute import _defer_neutral_writes

    orders = list(islice(topological_orders(g), 50))
    order = orders[rnd.randrange(len(orders))]
    deferred = _defer_neutral_writes(g, list(order))
    validate_order(g, deferred)
    assert sorted(deferred) == sorted(order)
    if not _unused_inputs(g):
        assert simulate_indices(g, deferred).peak_bytes == simulate_indices(g, list(order)).peak_bytes


def _unused_inputs(g: Graph) -> bool:
    """Whether a transient graph input no op reads is alive at the first step alone (the
    simulator's rule), where a deferred write may have stood instead of a bigger op:
    fit_budget keeps the order as it was when deferring raises its peak."""
    return any(g.producer[bi] is None and not g.users[bi] and not b.persistent for bi, b in enumerate(g.buffers))


def test_bad_budgets_are_refused():
    g = chain()
    with pytest.raises(SchedError, match="memory budget must be >= 0"):
        schedule(g, memory_budget=-1)
    with pytest.raises(Exception, match="memory_budget"):
        schedule(g, memory_budget=1.5)


def program_order_budget(g: Graph, share: float) -> tuple[list[int], int, int, int]:
    """Program order, its peak, the working-set bound, and a budget ``share`` of the way
    from the bound to that peak."""
    order = list(range(len(g.ops)))
    start = simulate_indices(g, order).peak_bytes
    bound = working_set_bound(g)
    return order, start, bound, bound + int(share * (start - bound))


@given(graphs(max_ops=12), st.floats(0.0, 1.0))
@settings(max_examples=120, deadline=None)
def test_fit_budget_is_valid_never_worse_than_its_start_never_below_the_bound(g, share):
    order, start, bound, budget = program_order_budget(g, share)
    fit = fit_budget(g, order, budget, max_moves=50)
    validate_order(g, list(fit.order))
    peak = simulate_indices(g, list(fit.order)).peak_bytes
    assert peak == fit.peak_bytes
    assert bound <= peak <= start
    assert fit.fits == (peak <= budget)
    assert fit.recompute_flops == recompute_flops(g, list(fit.order))
    assert fit.recomputed_ops == len(fit.order) - len(g.ops)
    if budget >= start:
        assert fit.order == tuple(order)


@given(graphs(max_ops=10), st.floats(0.0, 1.2))
@settings(max_examples=40, deadline=None)
def test_schedule_with_a_budget_returns_a_valid_answer(g, share):
    plain = schedule(g, method="greedy", time_limit=2)
    bound = working_set_bound(g)
    budget = bound + int(share * (plain.peak_bytes - bound))
    events = []
    r = schedule(g, memory_budget=budget, time_limit=2, progress=events.append)
    assert simulate(g, r.order).peak_bytes == r.peak_bytes >= r.lower_bound_bytes >= bound
    # A bound reported beside a plan holds for it: the bound of orders alone does not for
    # one that recomputes (the training chain's 417 B beside a 218 B plan).
    assert all(e.lower_bound_bytes <= e.best_peak_bytes for e in events)
    assert r.lower_bound_bytes == recompute_lower_bound(g) <= r.reorder_lower_bound_bytes
    if r.recomputed_ops == 0:
        assert r.peak_bytes >= r.reorder_lower_bound_bytes
    if budget >= plain.peak_bytes:
        assert r.fits_budget and r.recomputed_ops == 0


@given(graphs(max_ops=12), st.floats(0.0, 1.0))
@settings(max_examples=60, deadline=None)
def test_fit_budget_from_never_worse_than_one_fit_from_the_same_order(g, share):
    from model_sched.recompute import fit_budget_from

    order, start, bound, budget = program_order_budget(g, share)
    one = fit_budget(g, order, budget, max_moves=50)
    many = fit_budget_from(g, [order], budget)
    validate_order(g, list(many.order))
    assert simulate_indices(g, list(many.order)).peak_bytes == many.peak_bytes
    assert many.fits == (many.peak_bytes <= budget) and many.budget_bytes == budget
    if one.fits:
        assert many.fits and many.recompute_flops <= one.recompute_flops
    else:
        assert many.fits or many.peak_bytes <= one.peak_bytes


def test_fit_budget_from_with_no_time_left_returns_its_start():
    from model_sched.recompute import fit_budget_from

    g = chain()
    order = list(range(len(g.ops)))
    fit = fit_budget_from(g, [order], simulate_indices(g, order).peak_bytes - 150, time_limit=0.0)
    assert fit.order == tuple(order) and not fit.fits


def test_fit_budget_from_goes_on_from_a_run_that_ran_out_of_time(monkeypatch):
    """A run stopped by its time limit is continued from where it stopped, so the moves add
    up: here each run may make one move (standing in for a slow greedy on a large step) and
    the budget needs three. Restarting from the base (or at lower aims) never gets past one."""
    import attrs

    import model_sched.recompute as recompute

    real = recompute.fit_budget

    def one_move_then_out_of_time(graph, order, budget, *, time_limit=None, max_moves=None):
        fit = real(graph, order, budget, time_limit=time_limit, max_moves=1)
        return attrs.evolve(fit, reason="time limit") if fit.reason.startswith("stopped after") else fit

    monkeypatch.setattr(recompute, "fit_budget", one_move_then_out_of_time)
    g = training_chain(8, size=100)
    order = list(range(len(g.ops)))
    budget = simulate_indices(g, order).peak_bytes - 300
    assert not one_move_then_out_of_time(g, order, budget).fits
    fit = recompute.fit_budget_from(g, [order], budget, time_limit=60)
    assert fit.fits and fit.recomputed_ops == real(g, order, budget).recomputed_ops == 3
    validate_order(g, list(fit.order))
    assert simulate_indices(g, list(fit.order)).peak_bytes == fit.peak_bytes <= budget


@st.composite
def orders_with_reruns(draw):
    """A random graph, an order of it with the reruns a few greedy moves make, and a step."""
    from model_ir.testing.strategies import graphs as make_graphs

    g = draw(make_graphs(min_ops=2, max_ops=14))
    order, _, bound, _ = program_order_budget(g, 0.0)
    moves = draw(st.integers(0, 4))
    order = list(fit_budget(g, order, bound, max_moves=moves).order)
    return g, order, draw(st.integers(0, len(order) - 1))


@given(orders_with_reruns())
@settings(max_examples=300, deadline=None)
def test_a_moves_timeline_is_the_simulators(case):
    """The greedy ranks its moves by a timeline updated from the current order's
    instances instead of simulating each candidate: it must be the simulator's."""
    from model_ir.simulator import timeline_indices
    from model_sched.recompute import _shortlist, _State, _timeline_with

    g, order, t = case
    state, timeline = _State(g, order), timeline_indices(g, order)
    for _, at, chain, _ in _shortlist(g, state, t, 1, set()):
        simulated = timeline_indices(g, order[:at] + chain + order[at:])
        assert _timeline_with(g, state, timeline, at, chain) == list(simulated)


@given(orders_with_reruns())
@settings(max_examples=300, deadline=None)
def test_a_dropped_reruns_timeline_is_the_simulators(case):
    """Dropping the reruns a fitting order does not need tries each one on a timeline
    updated from the order's instances instead of a simulation: it must be the simulator's."""
    from model_ir.recompute import recomputations
    from model_ir.simulator import timeline_indices
    from model_sched.recompute import _State, _timeline_without

    g, order, _ = case
    state, timeline = _State(g, order), timeline_indices(g, order)
    for at, _ in recomputations(order):
        simulated = timeline_indices(g, order[:at] + order[at + 1:])
        assert _timeline_without(g, state, timeline, at) == list(simulated)


@given(orders_with_reruns())
@settings(max_examples=300, deadline=None)
def test_a_chain_no_limit_stopped_is_the_deepest_searchs(case):
    """The greedy skips the deeper chain searches when no depth or expansion limit
    stopped the shallower one: that one must then be what the deepest search finds."""
    from model_sched.recompute import CHAIN_DEPTHS, MAX_CHAIN, _chain, _State

    g, order, t = case
    state = _State(g, order)
    for k, b in enumerate(state.buf):
        p, later = g.producer[b], [u for u in state.uses[k] if u > t]
        if p is None or not later or not state.start[k] <= t < state.end[k]:
            continue
        deepest = _chain(g, state, p, later[0], t, MAX_CHAIN)
        for depth in CHAIN_DEPTHS:
            chain = _chain(g, state, p, later[0], t, depth)
            assert (chain is None) == (deepest is None)
            if chain is None or not chain[2]:
                assert chain is None or chain[:2] == deepest[:2]
                break


@pytest.mark.parametrize("collector_on", [True, False])
def test_the_greedy_leaves_no_cycles_and_the_collector_as_it_was(collector_on):
    """The greedy pauses Python's cycle collector (full collections walk every object of
    the process, a loaded model's included): it must then make no reference cycles, which
    only the collector frees, and leave the collector on or off as it found it."""
    import gc

    from model_sched.recompute import fit_budget_from

    g = training_chain(12, size=1 << 10, flops=lambda k: 10 * (k + 1))
    order, _, bound, _ = program_order_budget(g, 0.0)
    gc.collect()
    gc.disable()
    try:
        fit = fit_budget_from(g, [order], bound + 1, time_limit=5)
        assert fit.recomputed_ops > 0  # the search ran
        assert gc.collect() == 0  # nothing unreachable was left for the collector
        (gc.enable if collector_on else gc.disable)()
        fit_budget(g, order, bound + 1, time_limit=5)
        assert gc.isenabled() == collector_on
    finally:
        gc.enable()


@given(orders_with_reruns())
@settings(max_examples=150, deadline=None)
def test_deferring_neutral_writes_keeps_reruns_valid(case):
    """The cheapening refits orders that rerun ops: deferred writes keep them valid, at the same peak."""
    from model_sched.recompute import _defer_neutral_writes

    g, order, _ = case
    deferred = _defer_neutral_writes(g, order)
    validate_order(g, deferred)
    assert sorted(deferred) == sorted(order)
    if not _unused_inputs(g):
        assert simulate_indices(g, deferred).peak_bytes == simulate_indices(g, order).peak_bytes


def test_the_first_start_gets_three_quarters_of_the_time(monkeypatch):
    """fit_budget_from gives the best order three quarters of its time, each later start
    half of what is left, the last all of it (a large step's greedy is slow but steady
    from the best order)."""
    from model_sched import recompute

    limits = []
    real = recompute.fit_budget

    def recorded(graph, order, budget, *, time_limit=None, max_moves=None):
        limits.append(time_limit)
        return real(graph, order, budget, max_moves=0)  # no move: none fits, every start is tried

    monkeypatch.setattr(recompute, "fit_budget", recorded)
    g = chain()
    order = list(range(len(g.ops)))
    fit = recompute.fit_budget_from(g, [order] * 3, simulate_indices(g, order).peak_bytes - 100,
                                    time_limit=100.0, targets=1)
    assert not fit.fits and len(limits) == 3
    # Each start returned at once: the second gets half of the 100 s left, the last all of it.
    assert 74 < limits[0] <= 75 and 49 < limits[1] <= 50 and 99 < limits[2] <= 100
