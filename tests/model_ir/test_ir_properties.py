"""Hypothesis properties of the IR and simulator over random valid graphs."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from model_ir import (Graph, GraphError, Op, graph_from_dict, graph_to_dict, simulate,
                      validate_order, working_set_bound)
from model_ir.testing.strategies import graphs, topological_orders

import pytest


@given(graphs())
def test_peak_is_max_of_timeline(g):
    p = simulate(g)
    assert p.peak_bytes == max(p.timeline)
    assert p.peak_bytes >= working_set_bound(g)


@given(graphs())
def test_lifetimes_cover_producer_and_every_user(g):
    p = simulate(g)
    by_id = {lt.id: lt for lt in p.lifetimes}
    for bi, buf in enumerate(g.buffers):
        if buf.persistent:
            assert buf.id not in by_id
            continue
        lt = by_id[buf.id]
        prod = g.producer[bi]
        assert lt.start == (0 if prod is None else prod)
        for u in g.users[bi]:
            assert lt.start <= u < lt.end
        if buf.output:
            assert lt.end == len(g.ops)


@given(graphs(max_ops=6))
@settings(max_examples=40)
def test_every_topological_order_validates_and_timeline_matches_lifetimes(g):
    for order in topological_orders(g, limit=50):
        validate_order(g, order)
        ids = [g.ops[i].id for i in order]
        p = simulate(g, ids)
        for t in range(len(order)):
            live = g.persistent_bytes + sum(lt.size for lt in p.lifetimes if lt.start <= t < lt.end)
            assert p.timeline[t] == live


@given(graphs())
def test_json_round_trips_exactly(g):
    d = graph_to_dict(g)
    text = json.dumps(d)
    g2 = graph_from_dict(json.loads(text))
    assert g2 == g
    assert graph_to_dict(g2) == d


@given(graphs(min_ops=2), st.data())
def test_moving_a_consumer_before_its_producer_is_rejected(g, data):
    users = [(bi, u) for bi, us in enumerate(g.users) for u in us if g.producer[bi] is not None]
    if not users:
        return
    bi, u = data.draw(st.sampled_from(users))
    ops = list(g.ops)
    p = g.producer[bi]
    ops[p], ops[u] = ops[u], ops[p]  # consumer now before producer
    with pytest.raises(GraphError):
        Graph(g.buffers, ops)


@given(graphs(), st.data())
def test_unknown_buffer_reference_is_rejected(g, data):
    k = data.draw(st.integers(0, len(g.ops) - 1))
    op = g.ops[k]
    ops = list(g.ops)
    ops[k] = Op(op.id, inputs=op.inputs + ("no-such-buffer",), outputs=op.outputs)
    with pytest.raises(GraphError, match="unknown buffer 'no-such-buffer'"):
        Graph(g.buffers, ops)


def _reference_timeline(g, order):
    """Live bytes per step straight from the memory model's rules (an oracle independent
    of the simulator's lifetimes): a buffer is alive from its producer's step (0 for a
    graph input) to its last user's step, or to the end when it is an output."""
    step = {op_index: t for t, op_index in enumerate(order)}
    n = len(order)
    live = [g.persistent_bytes] * n
    for buf in g.buffers:
        if buf.persistent:
            continue
        producers = [step[i] for i, op in enumerate(g.ops) if buf.id in op.outputs]
        start = producers[0] if producers else 0
        users = [step[i] for i, op in enumerate(g.ops) if buf.id in op.inputs or buf.id in op.mutates]
        end = n - 1 if buf.output else max(users, default=start)
        for t in range(start, max(end, start) + 1):
            if t < n:
                live[t] += buf.size
    return live


@given(graphs(max_ops=6))
@settings(max_examples=40)
def test_timeline_equals_an_independent_oracle_in_every_order(g):
    for order in topological_orders(g, limit=30):
        assert list(simulate(g, [g.ops[i].id for i in order]).timeline) == _reference_timeline(g, order)


@given(graphs(max_ops=7))
@settings(max_examples=60)
def test_every_valid_order_keeps_each_write_in_program_order_with_the_other_users(g):
    """Write-after-read, read-after-write and write-after-write hazards: a mutating op
    keeps its program-order position relative to every other op using that buffer."""
    pairs = []
    for op_w in range(len(g.ops)):
        for b in g.ops[op_w].mutates:
            for u in range(len(g.ops)):
                if u != op_w and (b in g.ops[u].inputs or b in g.ops[u].mutates):
                    pairs.append((min(u, op_w), max(u, op_w)))
    for order in topological_orders(g, limit=30):
        pos = {i: t for t, i in enumerate(order)}
        for first, second in pairs:
            assert pos[first] < pos[second], (g.ops[first].id, g.ops[second].id)
