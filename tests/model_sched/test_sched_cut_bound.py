"""The cut bound at an op is exactly the least live bytes of any valid order at that op."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir.testing.strategies import graphs, topological_orders
from model_sched.bounds import ancestor_masks, descendant_masks, forced_bound
from model_sched.cut_bound import first_of_set_bound, step_cut_bound
from model_sched.liveness import liveness, timeline


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=8))
def test_cut_bound_is_the_exact_minimum_at_each_op(g):
    lv = liveness(g)
    fb = forced_bound(lv)
    anc, desc = ancestor_masks(lv), descendant_masks(lv)
    n = len(g.ops)
    least = [None] * n
    for order in topological_orders(g, limit=20000):
        tl = timeline(lv, order)
        for t, v in enumerate(order):
            least[v] = tl[t] if least[v] is None else min(least[v], tl[t])
    # graph inputs nobody reads are alive at step 0 only; the cut ignores them (still a bound)
    unused_inputs = lv.first_free_bytes > 0
    for v in range(n):
        cut = step_cut_bound(lv, v, anc, desc, fb.per_op[v])
        assert lv.persistent_bytes + fb.per_op[v] <= cut <= least[v]
        if not unused_inputs:
            assert cut == least[v]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(max_ops=8), st.data())
def test_first_of_set_bound_is_the_least_live_bytes_when_the_first_member_runs(g, data):
    """Over every valid order: the live bytes when the first op of the set runs. The
    bound is exactly their minimum (each candidate's cut is reached by an order that
    runs its cut set, then the candidate), so it bounds every order's peak."""
    lv = liveness(g)
    n = len(g.ops)
    members = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    anc, desc = ancestor_masks(lv), descendant_masks(lv)
    least = None
    for order in topological_orders(g, limit=20000):
        tl = timeline(lv, order)
        t = min(order.index(v) for v in members)
        least = tl[t] if least is None else min(least, tl[t])
    bound = first_of_set_bound(lv, members, anc, desc)
    assert bound <= least
    if lv.first_free_bytes == 0:  # (graph inputs nobody reads: alive at step 0 only, as above)
        assert bound == least


def test_first_of_set_bound_needs_a_set():
    import pytest

    from model_ir.testing.examples import training_chain

    lv = liveness(training_chain())
    with pytest.raises(ValueError, match="at least one member"):
        first_of_set_bound(lv, [], ancestor_masks(lv), descendant_masks(lv))


def test_recomputed_input_either_it_or_its_square_is_alive():
    """GELU-backward pattern: x is read by a recomputation that is unordered with the loss."""
    from model_ir.graph import Buffer, Graph, Op

    g = Graph([Buffer("x", 100), Buffer("big", 50), Buffer("x2", 80), Buffer("g", 10), Buffer("out", 1, output=True)],
              [Op("fwd", outputs=["x"]),
               Op("loss", inputs=["x"], outputs=["big"]),
               Op("sq", inputs=["x"], outputs=["x2"]),  # unordered with "loss"
               Op("bwd", inputs=["big", "x2"], outputs=["g"]),
               Op("end", inputs=["g"], outputs=["out"])])
    lv = liveness(g)
    fb = forced_bound(lv)
    v = g.op_index["loss"]
    assert fb.per_op[v] == 150  # x and big
    cut = step_cut_bound(lv, v, ancestor_masks(lv), descendant_masks(lv), fb.per_op[v])
    assert cut == 150  # sq after loss: x is its input, already counted; nothing extra
    v = g.op_index["bwd"]
    assert step_cut_bound(lv, v, ancestor_masks(lv), descendant_masks(lv), fb.per_op[v]) == 140
