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
