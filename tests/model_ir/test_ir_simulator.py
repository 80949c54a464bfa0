"""The memory simulator on graphs whose peaks are computed by hand."""

import pytest

from model_ir import Buffer, Graph, Op, ScheduleError, simulate, working_set_bound


def test_chain_peak_is_two_neighbours():
    # a(10) -> b(20) -> c(30): while op1 runs a and b are alive; while op2 runs b and c.
    g = Graph(
        [Buffer("a", 10), Buffer("b", 20), Buffer("c", 30)],
        [Op("A", outputs=["a"]), Op("B", inputs=["a"], outputs=["b"]), Op("C", inputs=["b"], outputs=["c"])],
    )
    p = simulate(g)
    assert p.timeline == (10, 30, 50)
    assert p.peak_bytes == 50
    assert [(lt.id, lt.start, lt.end) for lt in p.lifetimes] == [("a", 0, 2), ("b", 1, 3), ("c", 2, 3)]


def diamond():
    # A -> t1; B(t1) -> t2; C(t1) -> t3; D(t2, t3) -> loss (output); w persistent read by B.
    return Graph(
        [Buffer("w", 100, persistent=True), Buffer("t1", 10), Buffer("t2", 20), Buffer("t3", 30),
         Buffer("loss", 4, output=True)],
        [Op("A", outputs=["t1"]), Op("B", inputs=["t1", "w"], outputs=["t2"]),
         Op("C", inputs=["t1"], outputs=["t3"]), Op("D", inputs=["t2", "t3"], outputs=["loss"])],
    )


def test_diamond_both_orders():
    g = diamond()
    # ABCD: t1 alive 0..2, t2 1..3, t3 2..3, loss 3..3
    assert simulate(g).timeline == (110, 130, 160, 154)
    # ACBD: t3 2-wide earlier
    assert simulate(g, ["A", "C", "B", "D"]).timeline == (110, 140, 160, 154)
    assert simulate(g).peak_bytes == 160
    assert simulate(g).transient_peak_bytes == 60


def test_multi_output_op_and_output_lives_to_end():
    g = Graph(
        [Buffer("x", 7), Buffer("y", 5, output=True), Buffer("z", 1)],
        [Op("split", outputs=["x", "y"]), Op("use", inputs=["x"], outputs=["z"]), Op("tail")],
    )
    p = simulate(g)
    assert p.timeline == (12, 13, 5)


def test_graph_input_alive_from_start_until_last_use():
    g = Graph(
        [Buffer("in", 50), Buffer("a", 1), Buffer("b", 2)],
        [Op("A", outputs=["a"]), Op("B", inputs=["in", "a"], outputs=["b"]), Op("C", inputs=["b"])],
    )
    assert simulate(g).timeline == (51, 53, 2)


def test_inplace_update_keeps_buffer_alive_and_allocates_nothing():
    g = Graph(
        [Buffer("w", 40, persistent=True), Buffer("g", 40), Buffer("h", 8)],
        [Op("grad", outputs=["g"]), Op("other", outputs=["h"]), Op("relu_", mutates=["g"]),
         Op("sgd_", inputs=["g"], mutates=["w"])],
    )
    assert simulate(g).timeline == (80, 88, 80, 80)
    assert simulate(g, ["grad", "relu_", "sgd_", "other"]).timeline == (80, 80, 80, 48)


def test_invalid_order_names_the_dependency():
    g = diamond()
    with pytest.raises(ScheduleError, match="runs op 'B' before op 'A'"):
        simulate(g, ["B", "A", "C", "D"])
    with pytest.raises(ScheduleError, match="unknown op 'Q'"):
        simulate(g, ["A", "B", "C", "Q"])
    with pytest.raises(ScheduleError, match="twice"):
        simulate(g, ["A", "A", "C", "D"])
    with pytest.raises(ScheduleError, match="has 3 ops"):
        simulate(g, ["A", "B", "C"])


def test_working_set_bound():
    g = diamond()
    # D reads t2 (20) and t3 (30) and writes loss (4): 54 + persistent 100
    assert working_set_bound(g) == 154
    assert working_set_bound(g) <= simulate(g).peak_bytes


def test_empty_graph():
    g = Graph([Buffer("w", 3, persistent=True)], [])
    assert simulate(g).peak_bytes == 3


def test_empty_graph_with_a_transient_input():
    g = Graph([Buffer("x", 5), Buffer("w", 3, persistent=True)], [])
    p = simulate(g)
    assert p.peak_bytes == 3 and p.timeline == ()
    assert [(lt.id, lt.start, lt.end) for lt in p.lifetimes] == [("x", 0, 1)]


def held_chain(released_after="C"):
    # a(10) -> b(20) -> c(30) -> d(5); Python holds ``a`` until C ran (eager), though B reads it last.
    return Graph(
        [Buffer("a", 10, meta={"released_after": released_after}), Buffer("b", 20), Buffer("c", 30),
         Buffer("d", 5, output=True)],
        [Op("A", outputs=["a"]), Op("B", inputs=["a"], outputs=["b"]), Op("C", inputs=["b"], outputs=["c"]),
         Op("D", inputs=["c"], outputs=["d"])],
    )


def test_eager_keeps_a_buffer_until_python_releases_it():
    g = held_chain()
    assert simulate(g).timeline == (10, 30, 50, 35)  # the plan frees ``a`` after B
    eager = simulate(g, eager=True)
    assert eager.timeline == (10, 30, 60, 35)
    assert [(lt.id, lt.start, lt.end) for lt in eager.lifetimes][0] == ("a", 0, 3)
    # in another order, until wherever C runs
    assert simulate(g, ["A", "B", "C", "D"], eager=True).peak_bytes == 60


def test_eager_release_before_the_last_use_or_of_an_unknown_op_changes_nothing():
    for released_after in ("A", "no-such-op"):
        g = held_chain(released_after)
        assert simulate(g, eager=True) == simulate(g)


def summed_gradients(into="g1", into2="s1"):
    """g1 and g2 (8 bytes each) summed into s1, s1 and g3 into s2 (eager: in place, into the
    first gradient, ``meta["eager_in_place"]``), then read by U."""
    def op(name, inputs=(), outputs=(), into=None):
        return Op(name, inputs=list(inputs), outputs=list(outputs), meta={"eager_in_place": into} if into else {})
    return Graph(
        [Buffer(b, 8) for b in ("g1", "g2", "s1", "g3", "s2")] + [Buffer("u", 1, output=True)],
        [op("G1", outputs=["g1"]), op("G2", outputs=["g2"]), op("S1", ["g1", "g2"], ["s1"], into),
         op("G3", outputs=["g3"]), op("S2", ["s1", "g3"], ["s2"], into2), op("U", ["s2"], ["u"])])


def test_eager_sums_in_place_into_the_first_gradient():
    g = summed_gradients()
    assert simulate(g).timeline == (8, 16, 24, 16, 24, 9)  # a plan's sums may run out of place
    eager = simulate(g, eager=True)
    assert eager.timeline == (8, 16, 16, 16, 16, 9)
    spans = {lt.id: (lt.start, lt.end, lt.size) for lt in eager.lifetimes}
    # one block from G1 to U, as eager's chain of in-place sums keeps it
    assert spans["g1"] == (0, 6, 8) and spans["s1"][2] == spans["s2"][2] == 0


def test_a_sum_in_place_needs_the_last_use_of_its_input():
    g = summed_gradients()
    # not the input's last use (G2 reads g1 too here): out of place, as eager would (another reference)
    late = Graph(list(g.buffers), [*g.ops[:2], g.ops[2], Op("R", inputs=["g1"]), *g.ops[3:]])
    assert simulate(late, eager=True).timeline[2] == 24
    assert simulate(summed_gradients(into="g2", into2=None), eager=True).timeline[2] == 16  # either input
    assert simulate(summed_gradients(into="no-such-buffer", into2=None), eager=True) == \
        simulate(summed_gradients(into=None, into2=None))


def test_eager_takes_no_recomputation():
    g = held_chain()
    with pytest.raises(ScheduleError, match="recomputation"):
        simulate(g, ["A", "B", "A", "C", "D"], eager=True)
