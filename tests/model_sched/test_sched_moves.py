"""Long-range single-op moves (model_sched.moves)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir.graph import Buffer, Graph, Op
from model_ir.simulator import validate_order
from model_ir.testing.examples import random_topological_order
from model_ir.testing.strategies import graphs
from model_sched import schedule
from model_sched.bounds import forced_bound
from model_sched.control import SolveControl
from model_sched.liveness import liveness, peak, timeline
from model_sched.moves import MoveEvaluator, improve_by_moves
from model_sched.search import exact_search

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _random_order(g, seed):
    return [g.op_index[i] for i in random_topological_order(g, seed)]


@SETTINGS
@given(graphs(max_ops=12), st.integers(0, 1000))
def test_the_peak_of_every_move_is_the_simulated_one(g, seed):
    """The O(inputs) estimate of each move equals the peak of the moved order, and the
    moved order is valid."""
    lv = liveness(g)
    order = _random_order(g, seed)
    moves = MoveEvaluator(lv, order)
    for v in range(lv.n_ops):
        for j in moves.targets(v):
            moved = list(order)
            moved.insert(j, moved.pop(moves.pos[v]))
            validate_order(g, moved)
            assert moves.peak_after(v, j) == peak(lv, moved), (v, moves.pos[v], j)


@SETTINGS
@given(graphs(max_ops=10), st.integers(0, 1000))
def test_moves_never_worsen_and_stay_above_the_optimum(g, seed):
    lv = liveness(g)
    control = SolveControl(lv)
    start = _random_order(g, seed)
    control.offer(start, "start")
    improve_by_moves(lv, control)
    validate_order(g, control.best_order)
    assert control.best_peak == peak(lv, control.best_order) <= peak(lv, start)
    assert control.best_peak >= exact_search(lv).peak >= forced_bound(lv).bytes


def tied_weight_step(layers: int = 6) -> Graph:
    """A training step whose first backward op computes a big gradient (a tied weight's,
    300 bytes) from small inputs, read only by the last op of backward: in program order
    it sits on top of every saved activation; run last, it costs its 2 small inputs."""
    buffers = [Buffer("x", 1), Buffer("w", 1000, persistent=True)]
    ops = []
    prev = "x"
    for k in range(layers):
        buffers.append(Buffer(f"a{k}", 100))
        ops.append(Op(f"f{k}", inputs=[prev], outputs=[f"a{k}"]))
        prev = f"a{k}"
    buffers += [Buffer("dl", 1), Buffer("gw", 300)]
    ops += [Op("loss", inputs=[prev], outputs=["dl"]), Op("tied_grad", inputs=["dl", "x"], outputs=["gw"])]
    grad = "dl"
    for k in reversed(range(layers)):
        buffers.append(Buffer(f"g{k}", 1))
        ops.append(Op(f"b{k}", inputs=[grad, f"a{k}"], outputs=[f"g{k}"]))
        grad = f"g{k}"
    ops.append(Op("update", inputs=[grad, "gw"], mutates=["w"]))
    return Graph(buffers, ops, name="tied")


def test_a_big_gradient_moves_next_to_its_reader():
    g = tied_weight_step()
    lv = liveness(g)
    control = SolveControl(lv)
    control.offer(list(range(lv.n_ops)), "program")
    assert control.best_peak == 1000 + 1 + 600 + 1 + 300  # weight, x, activations, loss grad, big gradient
    assert improve_by_moves(lv, control)
    assert control.best_peak == exact_search(lv).peak == 1000 + 1 + 600 + 1 + 1  # first backward op; gradient last
    assert control.best_order.index(g.op_index["tied_grad"]) == lv.n_ops - 2
    assert schedule(g, method="auto", time_limit=10).optimal


def test_moves_stop_at_the_deadline_and_the_bound():
    g = tied_weight_step(40)
    lv = liveness(g)
    control = SolveControl(lv)
    control.offer(list(range(lv.n_ops)), "program")
    assert not improve_by_moves(lv, control, deadline=0.0)  # long past
    assert control.best_source == "program"
    control.raise_bound(control.best_peak)
    assert not improve_by_moves(lv, control)
    assert timeline(lv, control.best_order) == timeline(lv, list(range(lv.n_ops)))
