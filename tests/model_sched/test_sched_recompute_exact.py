"""The exact recomputation model (recompute-exact): equal to brute force on tiny graphs,
never worse than the greedy, never below the working-set bound, answers checked by the simulator."""

import json

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir import Buffer, Graph, Op, simulate, working_set_bound
from model_ir.errors import ScheduleError
from model_ir.recompute import recomputable_ops, recompute_flops
from model_ir.simulator import simulate_indices, validate_order
from model_ir.testing.strategies import graphs
from model_sched import schedule
from model_sched.recompute import fit_budget

from .conftest import layered_graph
from .test_sched_budget import chain

pytest.importorskip("ortools")

from model_sched.recompute_exact import (  # noqa: E402
    MAX_EXACT_OPS, drop_unread_recomputations, fit_budget_exact, outputs_bound, recompute_bytes,
    recompute_flops_lower_bound, recompute_lower_bound,
)


def branchy() -> Graph:
    """Six ops: an expensive first activation read by every backward op, cheap later ones."""
    buffers = [Buffer("x", 4, persistent=True), Buffer("a0", 100), Buffer("a1", 60), Buffer("a2", 80),
               Buffer("g2", 1), Buffer("g1", 1), Buffer("g0", 1, output=True)]
    ops = [Op("f0", inputs=["x"], outputs=["a0"], meta={"flops": 5000}),
           Op("f1", inputs=["a0"], outputs=["a1"], meta={"flops": 100}),
           Op("f2", inputs=["a1"], outputs=["a2"], meta={"flops": 300}),
           Op("b2", inputs=["a2", "a0"], outputs=["g2"]),
           Op("b1", inputs=["a1", "g2"], outputs=["g1"], meta={"flops": 7}),
           Op("b0", inputs=["a0", "g1"], outputs=["g0"])]
    return Graph(buffers, ops, name="branchy")


def brute_force(g: Graph):
    """``(peak bytes, recomputed FLOPs, bytes written)`` of every valid order running each
    op at most twice."""
    n = len(g.ops)
    again = recomputable_ops(g)
    preds = g.predecessors
    count = [0] * n
    seq: list[int] = []
    plans = []

    def visit():
        if all(count):
            try:
                validate_order(g, seq)
            except ScheduleError:
                pass
            else:
                plans.append((simulate_indices(g, seq).peak_bytes, recompute_flops(g, seq),
                              recompute_bytes(g, seq)))
        for i in range(n):
            first = count[i] == 0 and all(count[p] for p in preds[i])
            if first or (count[i] == 1 and i in again):
                count[i] += 1
                seq.append(i)
                visit()
                seq.pop()
                count[i] -= 1

    visit()
    return plans


def budgets(g: Graph, k: int = 6) -> list[int]:
    bound = working_set_bound(g)
    peak = simulate(g).peak_bytes
    return sorted({bound - 1, *(bound + (peak - bound) * j // k for j in range(k + 1))})


def with_kept_input(g: Graph) -> Graph:
    """``g`` plus a graph input that is a step output (alive throughout) and its reader."""
    return Graph(list(g.buffers) + [Buffer("kept", 50, output=True)], [Op("read_kept", inputs=["kept"])] + list(g.ops),
                 name=g.name + "-kept")


@pytest.mark.parametrize("g", [chain(2), chain(2, size=37), branchy(), with_kept_input(chain(2))],
                         ids=["chain2", "chain2-37", "branchy", "chain2-kept-input"])
def test_exact_equals_brute_force_on_tiny_graphs(g):
    assert 4 <= len(g.ops) <= 6
    plans = brute_force(g)
    assert min(peak for peak, _, _ in plans) >= recompute_lower_bound(g) >= working_set_bound(g)
    for budget in budgets(g):
        best = min(((f, b) for peak, f, b in plans if peak <= budget), default=None)
        fit = fit_budget_exact(g, budget, max_runs=2, time_limit=20)
        check(g, fit, budget)
        if best is None:
            assert not fit.fits and fit.status in ("infeasible", "below-bound") and fit.flops_lower_bound is None
        else:
            lower = recompute_flops_lower_bound(g, budget)
            assert lower is not None and lower <= best[0]  # a bound on every plan, any number of runs
            assert fit.fits and fit.status == "optimal"
            assert (fit.recompute_flops, fit.recompute_bytes) == best
            assert fit.flops_lower_bound == best[0]


def test_the_recompute_bound_counts_what_no_recomputation_frees():
    g = with_kept_input(chain(2))  # "kept" is alive at every op, whatever runs again
    assert recompute_lower_bound(g) == working_set_bound(g) + 50


def test_a_large_graphs_bound_counts_the_step_outputs_made_before_each_op():
    """Past RECOMPUTE_BOUND_OPS the bound is the working sets and the step outputs alone:
    chain(2)'s gradient g0 (1 B) is a step output, but only the update runs after the op
    making it, and reads it; a loss (150 B, made after the forward pass) is alive across
    every backward op, so b0 (a0, g1 and g0: 102 B) peaks with it. So is the bound tight on
    mobilenet_v3_small's AdamW step, whose largest update runs while the loss is alive
    (23217984 B, the plan's peak, where the working sets alone said 23217920)."""
    from model_sched import api

    g = chain(2)
    assert outputs_bound(g) == working_set_bound(g)
    ops = [Op("b1", inputs=["a1", "l"], outputs=["g1"]) if op.id == "b1" else op for op in g.ops]
    ops.insert(2, Op("loss", inputs=["a1"], outputs=["l"]))  # the backward pass starts from it
    lossy = Graph([*g.buffers, Buffer("l", 150, output=True)], ops, name="chain+loss", meta=g.meta)
    assert outputs_bound(lossy) == lossy.persistent_bytes + 102 + 150 == recompute_lower_bound(lossy)
    assert outputs_bound(lossy) > working_set_bound(lossy)
    assert api.recompute_bounds(lossy)[0] == recompute_lower_bound(lossy)
    limit, api.RECOMPUTE_BOUND_OPS = api.RECOMPUTE_BOUND_OPS, 2
    try:
        assert api.recompute_bounds(lossy) == (outputs_bound(lossy), None)
    finally:
        api.RECOMPUTE_BOUND_OPS = limit


@given(graphs(max_ops=10))
@settings(max_examples=150, deadline=None)
def test_the_outputs_bound_lies_between_the_working_sets_and_the_recompute_bound(g):
    assert working_set_bound(g) <= outputs_bound(g) <= recompute_lower_bound(g)
    assert outputs_bound(g) <= simulate(g).peak_bytes


def test_exact_beats_the_greedy_on_a_chain():
    # At this budget the greedy recomputes f2 then f0 (4000 FLOPs); recomputing f0 and
    # f1 once for the whole backward pass is enough.
    g = chain(4)
    order = list(range(len(g.ops)))
    greedy = fit_budget(g, order, 316)
    fit = fit_budget_exact(g, 316, time_limit=20)
    assert greedy.fits and fit.fits and fit.optimal
    assert fit.recompute_flops == 3000 < greedy.recompute_flops
    assert fit.flops_lower_bound == 3000


def test_the_flops_bound_of_a_chain():
    """chain(4): the activations a0..a3 (100 B each, made by f0..f3 for 1000..4000 FLOPs)
    are alive across b3 in every order. At 266 B, 200 B of them must go: rerunning the
    two cheapest producers, f0 and f1 (3000 FLOPs, what the exact plan pays), frees them,
    and the relaxed bound is within that; at the no-recompute peak it is 0."""
    g = chain(4)
    lower = recompute_flops_lower_bound(g, 266)
    assert 0 < lower <= 3000 == fit_budget_exact(g, 266, time_limit=20).recompute_flops
    assert recompute_flops_lower_bound(g, simulate(g).peak_bytes) == 0
    assert recompute_flops_lower_bound(g, working_set_bound(g) - 1) is None
    r = schedule(g, memory_budget=266, time_limit=5)
    assert r.recompute_flops_lower_bound == lower <= r.recompute_flops
    assert r.to_dict()["recompute_flops_lower_bound"] == lower


def test_schedule_recompute_exact_under_a_budget():
    g = chain(4)
    notes = []
    r = schedule(g, method="recompute-exact", memory_budget=316, time_limit=20,
                 progress=lambda p: notes.append(p.stage))
    greedy = schedule(g, method="recompute", memory_budget=316, time_limit=20)
    assert r.fits_budget and r.source == "recompute-exact"
    assert r.recompute_flops == 3000 < greedy.recompute_flops
    assert simulate(g, r.order).peak_bytes == r.peak_bytes
    assert any(s.startswith("recompute-exact: optimal") for s in notes)


def test_without_a_budget_it_is_auto():
    g = chain(4)
    r = schedule(g, method="recompute-exact", time_limit=5)
    assert r.recomputed_ops == 0 and r.peak_bytes == schedule(g, time_limit=5).peak_bytes


def test_a_budget_that_fits_without_recomputation_costs_nothing():
    g = chain(4)
    r = schedule(g, method="recompute-exact", memory_budget=simulate(g).peak_bytes, time_limit=5)
    assert r.fits_budget and r.recomputed_ops == 0


def test_large_graphs_get_the_greedy_with_a_note():
    g = layered_graph(MAX_EXACT_OPS + 10)
    plain = schedule(g, time_limit=2)
    notes = []
    r = schedule(g, method="recompute-exact", memory_budget=plain.peak_bytes - 1, time_limit=4,
                 progress=lambda p: notes.append(p.stage))
    assert any("greedy recomputation only" in s for s in notes)
    assert r.source != "recompute-exact"
    assert simulate(g, r.order).peak_bytes == r.peak_bytes


def rerun_before_a_write() -> Graph:
    """``a`` is read by ``h`` only after ``w`` writes ``f``'s input in place, and ``g``
    (ordered after ``f``, as RNG ops are) needs room while ``a`` is held: at 12 B, ``f``
    must rerun after ``g`` and before ``w``, earlier than ``a``'s next use, where the
    greedy inserts reruns."""
    return Graph([Buffer("x", 4), Buffer("a", 8), Buffer("t", 8)],
                 [Op("f", inputs=["x"], outputs=["a"], meta={"flops": 100}),
                  Op("g", inputs=["x"], outputs=["t"], after=["f"]),
                  Op("w", mutates=["x"], after=["f"]),
                  Op("h", inputs=["x", "a"])], name="rerun-before-a-write")


def test_recompute_falls_back_on_the_exact_model_where_the_greedy_cannot_fit():
    g = rerun_before_a_write()
    assert simulate(g).peak_bytes == 20 and working_set_bound(g) == 12
    greedy = fit_budget(g, range(4), 12)
    assert not greedy.fits and greedy.peak_bytes == 20
    notes = []
    r = schedule(g, method="recompute", memory_budget=12, time_limit=10, progress=lambda p: notes.append(p.stage))
    assert r.fits_budget and r.peak_bytes == 12 and r.source == "recompute-exact"
    assert r.order == ("f", "g", "f", "w", "h") and r.recompute_flops == 100
    assert any(s.startswith("recompute-exact: optimal") for s in notes)
    assert schedule(g, memory_budget=12, time_limit=10).fits_budget  # auto under a budget is recompute


def test_recompute_without_the_exact_model_says_why(monkeypatch):
    import model_sched.recompute_exact
    from model_sched.errors import SolverUnavailableError
    from model_sched.solvers import CpSatBackend

    g = rerun_before_a_write()
    notes = []

    def run():
        notes.clear()
        return schedule(g, method="recompute", memory_budget=12, time_limit=5, progress=lambda p: notes.append(p.stage))

    monkeypatch.setattr(model_sched.recompute_exact, "MAX_EXACT_OPS", 3)
    r = run()
    assert not r.fits_budget and r.peak_bytes == 20
    assert "recompute: the greedy cannot fit; 4 ops > 3, no exact search" in notes
    monkeypatch.undo()

    def missing(self):
        raise SolverUnavailableError("solver 'cpsat' needs the Python package 'ortools'")

    monkeypatch.setattr(CpSatBackend, "available", missing)
    r = run()
    assert not r.fits_budget and any("no exact search (solver 'cpsat' needs" in s for s in notes)


def test_a_budget_below_the_bound_is_not_searched(monkeypatch):
    # proven impossible before any search: the greedy and CP-SAT (which spent the whole
    # time left on alexnet at its persistent bytes) are not run
    import model_sched.recompute
    import model_sched.schedulers

    def never(*args, **kwargs):
        raise AssertionError("searched a budget below the lower bound")

    monkeypatch.setattr(model_sched.recompute, "fit_budget_from", never)
    monkeypatch.setattr(model_sched.schedulers, "solve_exact", never)
    g = rerun_before_a_write()
    notes = []
    r = schedule(g, method="recompute", memory_budget=11, time_limit=5, progress=lambda p: notes.append(p.stage))
    assert not r.fits_budget and r.lower_bound_bytes == 12 and r.peak_bytes == 20
    assert "recompute: the budget is below the lower bound of any plan (12 B); no search" in notes


def test_a_time_limit_returns_a_checked_answer_with_its_bound():
    g = layered_graph(MAX_EXACT_OPS, seed=3)
    order = list(range(len(g.ops)))
    greedy = fit_budget(g, order, (simulate(g).peak_bytes + working_set_bound(g)) // 2)
    fit = fit_budget_exact(g, greedy.budget_bytes, time_limit=0.5, hints=[greedy.order])
    check(g, fit, greedy.budget_bytes)
    assert fit.status in ("optimal", "feasible", "unknown", "infeasible")
    if greedy.fits:
        assert fit.fits and fit.recompute_flops <= greedy.recompute_flops
        lower = recompute_flops_lower_bound(g, greedy.budget_bytes)
        assert lower is not None and lower <= fit.recompute_flops


def test_unread_recomputations_are_dropped():
    g = chain(2)
    order = [0, 1, 2, 0, 3, 4]  # f0 again after its last reader b0... no: b0 (3) reads it
    assert drop_unread_recomputations(g, order) == order
    useless = [0, 1, 2, 3, 0, 4]  # f0 again after every reader of a0
    assert drop_unread_recomputations(g, useless) == [0, 1, 2, 3, 4]


def check(g: Graph, fit, budget: int) -> None:
    validate_order(g, list(fit.order))
    peak = simulate_indices(g, list(fit.order)).peak_bytes
    assert fit.peak_bytes == peak >= fit.lower_bound_bytes >= working_set_bound(g)
    assert fit.fits == (peak <= budget)
    assert fit.recompute_flops == recompute_flops(g, list(fit.order))
    assert fit.recomputed_ops == len(fit.order) - len(g.ops)
    if fit.flops_lower_bound is not None and fit.fits:
        assert fit.flops_lower_bound <= fit.recompute_flops
    if budget < fit.lower_bound_bytes:
        assert not fit.fits


@st.composite
def costed_graphs(draw, max_ops: int = 8):
    g = draw(graphs(max_ops=max_ops))
    flops = draw(st.lists(st.integers(0, 50), min_size=len(g.ops), max_size=len(g.ops)))
    ops = [attrs.evolve(op, meta={**op.meta, "flops": f}) for op, f in zip(g.ops, flops)]
    return Graph(g.buffers, ops, name=g.name)


@given(costed_graphs(max_ops=5), st.floats(-0.1, 1.0))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_recompute_bounds_and_answers_against_brute_force_on_random_graphs(g, share):
    """On random graphs (before: four hand-made ones): the recompute bound is at most every
    plan's peak, the FLOP bound at most the cheapest fitting plan's, the exact model finds
    that plan, and both schedulers fit every budget some plan fits."""
    plans = brute_force(g)
    best_peak = min(p for p, _, _ in plans)
    ws = working_set_bound(g)
    budget = max(0, ws + int(share * (simulate(g).peak_bytes - ws)))
    assert recompute_lower_bound(g) <= best_peak
    cheapest = min((f for p, f, _ in plans if p <= budget), default=None)
    if cheapest is None:
        return
    lower = recompute_flops_lower_bound(g, budget)
    assert lower is not None and lower <= cheapest
    fit = fit_budget_exact(g, budget, max_runs=2, time_limit=20, workers=1)
    assert fit.fits and fit.recompute_flops == cheapest
    for method in ("recompute", "recompute-exact"):
        r = schedule(g, method=method, memory_budget=budget, time_limit=20)
        assert r.fits_budget and r.lower_bound_bytes <= best_peak, method
    assert r.recompute_flops <= cheapest  # recompute-exact: optimal among plans running ops at most twice


def runs_per_op(order) -> int:
    return max((list(order).count(i) for i in set(order)), default=1)


@given(costed_graphs(), st.floats(-0.1, 1.0))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_exact_is_valid_and_never_worse_than_the_greedy(g, share):
    order = list(range(len(g.ops)))
    bound = working_set_bound(g)
    budget = max(0, bound + int(share * (simulate(g).peak_bytes - bound)))
    greedy = [fit_budget(g, order, budget, max_moves=50)]
    r = schedule(g, method="recompute", memory_budget=budget, time_limit=2)
    greedy.append(fit_budget(g, [g.op_index[o] for o in r.order], budget, max_moves=50))
    k = max([2] + [runs_per_op(drop_unread_recomputations(g, list(f.order))) for f in greedy])
    fit = fit_budget_exact(g, budget, max_runs=k, time_limit=20, workers=1)
    check(g, fit, budget)
    assert fit.status in ("optimal", "infeasible", "below-bound")
    lower = recompute_flops_lower_bound(g, budget)
    for f in greedy + [r]:
        fits = f.fits if hasattr(f, "fits") else f.fits_budget
        if fits:
            assert fit.fits and fit.recompute_flops <= f.recompute_flops
            assert lower is not None and lower <= fit.recompute_flops
    exact = schedule(g, method="recompute-exact", memory_budget=budget, time_limit=20)
    assert simulate(g, exact.order).peak_bytes == exact.peak_bytes >= bound
    if r.fits_budget:
        assert exact.fits_budget and exact.recompute_flops <= r.recompute_flops


def test_a_budget_the_exact_model_proves_unreachable_is_reported(tmp_path, capsys):
    from model_ir.cli import main
    from model_ir.json_format import save_graph

    from model_ir.testing.examples import two_gradients

    g = two_gradients()
    assert working_set_bound(g) == 24 and simulate(g).peak_bytes == 32
    r = schedule(g, memory_budget=28, time_limit=20)
    assert not r.fits_budget and r.no_fit_within_runs == 2 and r.to_dict()["no_fit_within_runs"] == 2
    assert schedule(g, method="recompute-exact", memory_budget=28, time_limit=20).no_fit_within_runs == 2
    r = schedule(g, memory_budget=32, time_limit=20)
    assert r.fits_budget and r.no_fit_within_runs is None
    save_graph(g, tmp_path / "g.json")
    # exit status 3 (none found; the proof covers two runs per op, not every plan) and 1
    # below the lower bound, as place's for a capacity, and no plan written (before: 0,
    # and the plan that misses the budget written as if it met it)
    plan = tmp_path / "plan.json"
    assert main(["schedule", str(tmp_path / "g.json"), "--budget", "28", "--time-limit", "20", "--quiet",
                 "-o", str(plan)]) == 3
    assert "does NOT fit" in (out := capsys.readouterr().out)
    assert "no plan running each op at most 2 times fits it (proven)" in out
    assert "below the lower bound" not in out  # 28 B is above it (24 B): nothing proves every plan misses
    assert f"nothing written to {plan}: the plan does not fit the budget" in out and not plan.exists()
    assert main(["schedule", str(tmp_path / "g.json"), "--budget", "23", "--time-limit", "20", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["fits_budget"] is False
    assert main(["schedule", str(tmp_path / "g.json"), "--budget", "23", "--time-limit", "20", "--quiet"]) == 1
    assert "it is below the lower bound: no plan fits it, with any recomputation" in capsys.readouterr().out
    assert main(["schedule", str(tmp_path / "g.json"), "--budget", "32", "--quiet", "-o", str(plan)]) == 0
    assert plan.exists()


@given(costed_graphs(), st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_recompute_fits_every_budget_the_exact_model_fits(g, share):
    bound = working_set_bound(g)
    budget = bound + int(share * (simulate(g).peak_bytes - bound))
    exact = fit_budget_exact(g, budget, time_limit=20, workers=1)
    r = schedule(g, method="recompute", memory_budget=budget, time_limit=20)
    assert simulate(g, r.order).peak_bytes == r.peak_bytes
    assert r.fits_budget == exact.fits


@st.composite
def training_chains(draw):
    """A forward chain of 2 to 4 ops (random sizes and FLOPs, some reading an earlier
    activation too) whose backward pass reads the activations in reverse."""
    k = draw(st.integers(2, 4))
    size = st.integers(1, 100)
    buffers = [Buffer("x", 8, persistent=True)]
    ops = []
    reads: list[list[str]] = []
    for j in range(k):
        ins = ["x" if j == 0 else f"a{j - 1}"]
        if j >= 2 and draw(st.booleans()):
            ins.append(f"a{draw(st.integers(0, j - 2))}")
        buffers.append(Buffer(f"a{j}", draw(size)))
        ops.append(Op(f"f{j}", inputs=ins, outputs=[f"a{j}"], meta={"flops": draw(st.integers(0, 50))}))
        reads.append([b for b in ins if b != "x"])
    grad = None
    for j in reversed(range(k)):
        buffers.append(Buffer(f"g{j}", draw(st.integers(1, 10)), output=j == 0))
        ins = [f"a{j}"] + reads[j] + ([grad] if grad else [])
        ops.append(Op(f"b{j}", inputs=list(dict.fromkeys(ins)), outputs=[f"g{j}"]))
        grad = f"g{j}"
    return Graph(buffers, ops, name="training-chain")


@given(training_chains(), st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_exact_never_costs_more_than_the_greedy_on_training_chains(g, share):
    order = list(range(len(g.ops)))
    bound = working_set_bound(g)
    budget = bound + int(share * (simulate(g).peak_bytes - bound))
    greedy = fit_budget(g, order, budget, max_moves=50)
    k = max(2, runs_per_op(drop_unread_recomputations(g, list(greedy.order))))
    fit = fit_budget_exact(g, budget, max_runs=k, time_limit=20, workers=1)
    check(g, fit, budget)
    assert fit.status in ("optimal", "infeasible", "below-bound")
    if greedy.fits:
        assert fit.fits and fit.recompute_flops <= greedy.recompute_flops
        lower = recompute_flops_lower_bound(g, budget)
        assert lower is not None and lower <= fit.recompute_flops


def test_ctrl_c_during_the_solve_returns_the_best_plan_so_far(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    from model_ir.json_format import save_graph

    g = layered_graph(30, width=4, seed=1)  # the exact model runs to any time limit here
    path = tmp_path / "g.json"
    save_graph(g, path)
    bound = working_set_bound(g)
    budget = bound + (simulate(g).peak_bytes - bound) * 3 // 10
    cli = [sys.executable, "-c", "import sys; from model_ir.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(cli + ["schedule", str(path), "--method", "recompute-exact", "--budget", str(budget),
                                   "--time-limit", "60", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "recompute-exact: CP-SAT" in line:
            break
    time.sleep(1.0)
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert time.perf_counter() - started < 5
    result = json.loads(out)
    assert proc.returncode == (0 if result["fits_budget"] else 3), err  # 3: no fitting plan found, none proven
    assert result["interrupted"] is True and result["seconds"] < 30
    assert simulate(g, result["order"]).peak_bytes == result["peak_bytes"]
