"""Hand-made graphs: validation errors and dependencies (data, after, hazards)."""

import pytest

from model_ir import Buffer, Graph, GraphError, Op


def chain(n=3, size=10):
    bufs = [Buffer(f"t{i}", size) for i in range(n)]
    ops = [Op(f"op{i}", inputs=[f"t{i-1}"] if i else [], outputs=[f"t{i}"]) for i in range(n)]
    return Graph(bufs, ops, name="chain")


def test_chain_dependencies():
    g = chain(3)
    assert g.predecessors == ((), (0,), (1,))
    assert g.successors == ((1,), (2,), ())
    assert g.producer == (0, 1, 2)
    assert g.users == ((1,), (2,), ())
    assert g.writers == ((), (), ())


def test_writers_are_the_in_place_writers_of_each_buffer_in_program_order():
    g = Graph([Buffer("w", 4, persistent=True), Buffer("t", 4)],
              [Op("read", inputs=["w"], outputs=["t"]), Op("scale", mutates=["w"]),
               Op("add", inputs=["t"], mutates=["w"])])
    assert g.writers == ((1, 2), ())
    assert g.users == ((0, 1, 2), (2,))


@pytest.mark.parametrize(
    "buffers, ops, message",
    [
        ([Buffer("a", 1), Buffer("a", 2)], [], "duplicate buffer id 'a'"),
        ([Buffer("a", 1)], [Op("x", outputs=["a"]), Op("x")], "duplicate op id 'x'"),
        ([Buffer("a", -1)], [], "size must be >= 0"),
        ([Buffer("a", 1.5)], [], "size must be an integer"),
        ([Buffer("a", True)], [], "size must be an integer"),
        ([Buffer("a", 1)], [Op("x", inputs=["b"])], "unknown buffer 'b'"),
        ([Buffer("a", 1)], [Op("x", outputs=["a"]), Op("y", outputs=["a"])],
         "buffer 'a' is produced twice: by op 'x' and by op 'y'"),
        ([Buffer("a", 1)], [Op("x", inputs=["a"]), Op("y", outputs=["a"])],
         "op 'x' uses buffer 'a' before op 'y' produces it"),
        ([Buffer("a", 1)], [Op("x", mutates=["a"]), Op("y", outputs=["a"])],
         "op 'x' uses buffer 'a' before op 'y' produces it"),
        ([], [Op("x", after=["y"]), Op("y")], "op 'x' must run after op 'y', which comes later"),
        ([], [Op("x", after=["x"])], "op 'x' must run after op 'x'"),
        ([], [Op("x", after=["zz"])], "unknown op 'zz'"),
        ([Buffer("w", 1, persistent=True)], [Op("x", outputs=["w"])], "produces persistent buffer 'w'"),
        ([Buffer("a", 1)], [Op("x", inputs=["a"], outputs=["a"])], "both produces and uses"),
    ],
)
def test_invalid_graphs_are_rejected_with_a_clear_message(buffers, ops, message):
    with pytest.raises(GraphError, match=message.replace("(", r"\(")):
        Graph(buffers, ops)


def test_inplace_hazards_order_writes_between_readers():
    # x produced; r1 reads; w mutates; r2 reads; w2 mutates; r3 reads
    g = Graph(
        [Buffer("x", 4), Buffer("o1", 1), Buffer("o2", 1), Buffer("o3", 1)],
        [
            Op("p", outputs=["x"]),
            Op("r1", inputs=["x"], outputs=["o1"]),
            Op("w", mutates=["x"]),
            Op("r2", inputs=["x"], outputs=["o2"]),
            Op("w2", inputs=["x"], mutates=["x"]),
            Op("r3", inputs=["x"], outputs=["o3"]),
        ],
    )
    i = g.op_index
    assert set(g.predecessors[i["w"]]) == {i["p"], i["r1"]}
    assert set(g.predecessors[i["r2"]]) == {i["p"], i["w"]}
    assert set(g.predecessors[i["w2"]]) == {i["p"], i["w"], i["r2"]}
    assert set(g.predecessors[i["r3"]]) == {i["p"], i["w2"]}


def test_readers_between_writes_stay_unordered():
    g = Graph(
        [Buffer("w", 8, persistent=True), Buffer("a", 1), Buffer("b", 1)],
        [Op("r1", inputs=["w"], outputs=["a"]), Op("r2", inputs=["w"], outputs=["b"]),
         Op("upd", mutates=["w"])],
    )
    assert g.predecessors[0] == () and g.predecessors[1] == ()
    assert g.predecessors[2] == (0, 1)


def test_after_dependency():
    g = Graph([], [Op("a"), Op("b"), Op("c", after=["a"])])
    assert g.predecessors == ((), (), (0,))


def test_graph_is_immutable():
    g = chain()
    with pytest.raises(AttributeError):
        g.name = "x"
    with pytest.raises(AttributeError):
        g.ops[0].id = "y"
