"""The recomputation cut bound (model_sched.recompute_cut): never above a valid plan's
peak, tight where the per-op bounds are not."""

import sys

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_ir import Buffer, Graph, Op
from model_ir.recompute import RERUN_WITHOUT_WRITES
from model_ir.simulator import simulate_indices
from model_ir.testing.strategies import graphs
from model_sched import schedule

from .test_sched_budget import orders_with_reruns
from .test_sched_recompute_exact import brute_force

pytest.importorskip("ortools")

from model_sched import recompute_cut  # noqa: E402
from model_sched.recompute_cut import recompute_cut_bound  # noqa: E402
from model_sched.recompute_exact import fit_budget_exact, recompute_lower_bound  # noqa: E402

K = 1024


def two_updates() -> Graph:
    """Adagrad's shape on two weights: each gradient is made from an activation of the
    other weight's layer, each update reads its gradient and a square-root temporary."""
    buffers = [Buffer("x", 64, persistent=True), Buffer("w1", 4 * K, persistent=True),
               Buffer("w2", 4 * K, persistent=True), Buffer("a1", K), Buffer("a2", K),
               Buffer("g1", 4 * K), Buffer("g2", 4 * K), Buffer("s1", 4 * K), Buffer("s2", 4 * K)]
    ops = [Op("f1", inputs=["x", "w1"], outputs=["a1"]), Op("f2", inputs=["x", "w2"], outputs=["a2"]),
           Op("d1", inputs=["a2"], outputs=["g1"]), Op("d2", inputs=["a1"], outputs=["g2"]),
           Op("q1", inputs=["g1"], outputs=["s1"]), Op("q2", inputs=["g2"], outputs=["s2"]),
           Op("u1", inputs=["g1", "s1"], mutates=["w1"]), Op("u2", inputs=["g2", "s2"], mutates=["w2"])]
    return Graph(buffers, ops, name="two-updates")


def test_whichever_update_runs_first_keeps_what_the_other_needs(monkeypatch):
    """u1 and u2 are unordered. Whichever runs first (8 KiB working set), the other's
    gradient or the 1 KiB activation it is made from is alive beside it, and that
    activation cannot be made again once the update has written the weight it reads.
    Brute force over every order running each op at most twice (7.8 M orders, 4 min, not
    rerun here) finds 17472 B least: the bound is exact, where the per-op bounds say 8 KiB."""
    g = two_updates()
    persistent = g.persistent_bytes
    assert recompute_cut_bound(g, 0) == persistent + 9 * K == 17472
    assert recompute_lower_bound(g) == 17472
    monkeypatch.setattr(recompute_cut, "MAX_PAIR_CUTS", 0)
    assert recompute_cut_bound(g, 0) == persistent + 8 * K  # each op alone: its working set
    monkeypatch.undo()
    fit = schedule(g, memory_budget=17472, time_limit=10)
    assert fit.fits_budget and fit.peak_bytes == fit.lower_bound_bytes == 17472
    assert fit.reorder_lower_bound_bytes == 17472  # forced liveness alone: 16448
    miss = fit_budget_exact(g, 17471, time_limit=10)
    assert not miss.fits and miss.status == "below-bound" and miss.lower_bound_bytes == 17472


def written() -> Graph:
    buffers = [Buffer("w1", 64, persistent=True), Buffer("a1", 100), Buffer("g", 10), Buffer("out", 1, output=True)]
    ops = [Op("f1", inputs=["w1"], outputs=["a1"]), Op("gr", outputs=["g"]),
           Op("u1", inputs=["g"], mutates=["w1"]), Op("d2", inputs=["a1"], outputs=["out"], after=["u1"])]
    return Graph(buffers, ops, name="written")


def test_an_activation_made_from_a_written_input_counts_at_the_write(monkeypatch):
    """At u1 (which must follow f1: f1 reads w1 first), a1 is read later by d2 and cannot
    be made again: the bound at u1 counts it, which the forced sets leave to a rerun."""
    assert recompute_cut_bound(written(), 0) == 64 + 10 + 100
    assert schedule(written(), memory_budget=174, time_limit=5).fits_budget
    monkeypatch.setattr(recompute_cut, "MAX_CUT_OPS", 0)
    assert recompute_lower_bound(written()) == 64 + 100 + 1  # the forced sets alone: d2's working set


def shared_batch_norm() -> Graph:
    """One batch norm applied twice: both write the running mean rm in place, which a
    rerun leaves out and its output does not depend on."""
    rerun_without_writes = {RERUN_WITHOUT_WRITES: True}
    buffers = [Buffer("x", 8, persistent=True), Buffer("rm", 8, persistent=True), Buffer("a1", 100),
               Buffer("a2", 100), Buffer("h", 1000), Buffer("s", 10), Buffer("loss", 1, output=True)]
    ops = [Op("bn1", inputs=["x"], outputs=["a1"], mutates=["rm"], meta=rerun_without_writes),
           Op("bn2", inputs=["x"], outputs=["a2"], mutates=["rm"], meta=rerun_without_writes),
           Op("f", inputs=["a2"], outputs=["h"]), Op("g", inputs=["h"], outputs=["s"]),
           Op("loss", inputs=["a1", "s"], outputs=["loss"])]
    return Graph(buffers, ops, name="shared-bn")


def test_a_write_a_rerun_leaves_out_does_not_block_it():
    """bn1 may run again after bn2 wrote rm (validate_order checks a rerun's inputs only):
    rerun after g, a1 need not be alive across f's 1000 bytes. Found by a review; the
    bound said 1216 B and schedule() raised on its own answer."""
    g = shared_batch_norm()
    order = [0, 1, 2, 3, 0, 4]
    assert simulate_indices(g, order).peak_bytes == 1116
    assert recompute_cut_bound(g, 0) == 1116 == min(peak for peak, _, _ in brute_force(g))
    assert schedule(g, memory_budget=1116, time_limit=5).fits_budget


@st.composite
def graphs_with_rerun_flags(draw, max_ops: int = 5):
    """Random graphs whose ops writing only persistent buffers may be marked to rerun
    without those writes (batch norm's running statistics)."""
    g = draw(graphs(max_ops=max_ops))
    ops = [attrs.evolve(op, meta={**op.meta, RERUN_WITHOUT_WRITES: True})
           if op.mutates and all(g.buffer(b).persistent for b in op.mutates) and draw(st.booleans()) else op
           for op in g.ops]
    return Graph(g.buffers, ops, name=g.name)


@given(graphs_with_rerun_flags(max_ops=5))  # six ops can take minutes of brute force
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_cut_bound_is_never_above_a_plan_running_ops_twice(g):
    plans = brute_force(g)
    assert recompute_cut_bound(g, 0) <= min(peak for peak, _, _ in plans)


@given(orders_with_reruns())
@settings(max_examples=300, deadline=None)
def test_the_cut_bound_is_never_above_an_order_with_reruns(case):
    g, order, _ = case
    bound = recompute_lower_bound(g)
    assert bound <= simulate_indices(g, order).peak_bytes
    assert bound == recompute_cut_bound(g, bound)  # the floor given is kept or raised


def test_without_ortools_or_on_large_graphs_the_given_bound_stands(monkeypatch):
    monkeypatch.setitem(sys.modules, "ortools.graph.python.max_flow", None)  # its import fails
    assert recompute_cut_bound(two_updates(), 123) == 123
    monkeypatch.undo()
    monkeypatch.setattr(recompute_cut, "MAX_CUT_OPS", 7)  # two_updates has 8
    assert recompute_cut_bound(two_updates(), 123) == 123
