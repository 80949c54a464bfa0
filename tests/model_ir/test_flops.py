"""FLOPs per IR op from torch.utils.flop_counter: the formulas on traced shapes, the
graph's phase totals, agreement with FlopCounterMode on the eager step, JSON."""

from __future__ import annotations

import json
from collections import Counter

import attrs
import pytest

torch = pytest.importorskip("torch")

from model_ir import graph_from_dict, graph_to_dict
from model_ir.testing.torch_models import mlp
from model_ir.torch import CaptureError, capture_step
from model_ir.torch.flops import FLOPS_SOURCE, annotate_flops, node_flops
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode


def _annotated(model, x, **kw):
    """The captured step (its graph stripped of the FLOPs capture adds) and the graph annotated again."""
    step = capture_step(model, x, **kw)
    assert step.graph.meta["flops_source"] == "torch.utils.flop_counter"  # capture annotates
    plain = attrs.evolve(
        step.graph, ops=[attrs.evolve(op, meta={k: v for k, v in op.meta.items() if k != "flops"})
                         for op in step.graph.ops],
        meta={k: v for k, v in step.graph.meta.items() if k not in ("flops", "flops_source")})
    annotated = annotate_flops(plain, step.module)
    assert annotated == step.graph
    return attrs.evolve(step, graph=plain), annotated


def _ops(graph, target, phase):
    return [op for op in graph.ops if op.target == target and op.meta["phase"] == phase]


def test_linear_forward_and_backward_matmuls():
    b, i, h, o = 4, 6, 10, 3
    model = nn.Sequential(nn.Linear(i, h), nn.Linear(h, o))
    _, g = _annotated(model, torch.randn(b, i))
    fwd = _ops(g, "aten.addmm.default", "forward")
    assert [op.meta["flops"] for op in fwd] == [2 * b * i * h, 2 * b * h * o]
    # backward: grad input and grad weight of the second layer, grad weight of the first
    # (the batch does not require grad, so no grad input there)
    bwd = _ops(g, "aten.mm.default", "backward")
    assert sorted(op.meta["flops"] for op in bwd) == sorted([2 * b * h * o, 2 * b * h * o, 2 * b * i * h])
    assert g.meta["flops"]["forward"] == 2 * b * (i * h + h * o)
    assert g.meta["flops"]["backward"] == 2 * b * (2 * h * o + i * h)
    assert g.meta["flops_source"] == FLOPS_SOURCE


def test_conv2d_forward_and_backward():
    n, c, k, hw, ks = 2, 3, 4, 6, 3
    model = nn.Sequential(nn.Conv2d(c, k, ks, padding=1), nn.Conv2d(k, k, ks, padding=1))
    _, g = _annotated(model, torch.randn(n, c, hw, hw))
    conv1 = 2 * n * k * hw * hw * c * ks * ks  # output elements times multiply-adds each
    conv2 = 2 * n * k * hw * hw * k * ks * ks
    assert [op.meta["flops"] for op in _ops(g, "aten.convolution.default", "forward")] == [conv1, conv2]
    bwd = _ops(g, "aten.convolution_backward.default", "backward")
    # the second conv computes grad input and grad weight (each one forward's worth),
    # the first only grad weight
    assert [op.meta["flops"] for op in bwd] == [2 * conv2, conv1]


def test_mlp_step_matches_flop_counter_mode_on_the_eager_step():
    torch.manual_seed(0)
    model = mlp(width=16, depth=3, classes=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 16)
    step, g = _annotated(model, x, optimizer=opt)

    with FlopCounterMode(display=False) as forward:
        loss = model(x).sum()  # capture's default loss: the sum of the outputs
    with FlopCounterMode(display=False) as rest:
        loss.backward()
        opt.step()
    assert g.meta["flops"] == {
        "total": forward.get_total_flops() + rest.get_total_flops(),
        "forward": forward.get_total_flops(),
        "backward": rest.get_total_flops(),
        "optimizer": 0,  # elementwise updates: no formula
    }
    # and operator by operator
    eager = Counter(forward.get_flop_counts()["Global"]) + Counter(rest.get_flop_counts()["Global"])
    ir = Counter()
    nodes = {n.name: n for n in step.module.graph.nodes}
    for op in g.ops:
        if "flops" in op.meta:
            ir[nodes[op.id].target.overloadpacket] += op.meta["flops"]
    assert ir == eager


def test_ops_without_a_formula_count_zero():
    model = mlp(width=8, depth=2, classes=4)
    step, g = _annotated(model, torch.randn(2, 8), optimizer=torch.optim.Adam(model.parameters()))
    nodes = {n.name: n for n in step.module.graph.nodes}
    for op in g.ops:
        counted = op.target in ("aten.addmm.default", "aten.mm.default")
        assert ("flops" in op.meta) == counted, op.target
        if not counted:
            assert node_flops(nodes[op.id]) == 0
    assert g.meta["flops"]["optimizer"] == 0
    # placeholders, getitem and views are not operator work either
    for node in step.module.graph.nodes:
        if node.op != "call_function" or node.name in step.folded:
            assert node_flops(node) == 0


def test_annotation_changes_nothing_else_and_survives_json():
    model = mlp(width=8, depth=2, classes=4)
    step, g = _annotated(model, torch.randn(2, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    plain = step.graph
    assert g.buffers == plain.buffers
    assert g.name == plain.name
    assert [op.id for op in g.ops] == [op.id for op in plain.ops]
    for new, old in zip(g.ops, plain.ops, strict=True):
        assert {k: v for k, v in new.meta.items() if k != "flops"} == old.meta
        assert new == attrs.evolve(old, meta=new.meta)  # every other field is the same
    assert {k: v for k, v in g.meta.items() if k not in ("flops", "flops_source")} == plain.meta
    assert graph_from_dict(json.loads(json.dumps(graph_to_dict(g)))) == g
    assert annotate_flops(g, step.module) == g  # annotating twice changes nothing


def test_eval_step_is_all_forward():
    _, g = _annotated(mlp(width=8, depth=2, classes=4), torch.randn(2, 8), train=False)
    assert g.meta["flops"]["total"] == g.meta["flops"]["forward"] == 2 * 2 * (8 * 8 + 8 * 4)
    assert g.meta["flops"]["backward"] == g.meta["flops"]["optimizer"] == 0


def test_a_graph_from_another_module_is_refused():
    step = capture_step(mlp(width=8, depth=2, classes=4), torch.randn(2, 8))
    other = capture_step(nn.Linear(8, 4), torch.randn(2, 8), train=False)
    with pytest.raises(CaptureError, match="no node"):
        annotate_flops(step.graph, other.module)


def test_a_failing_formula_names_the_node():
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")  # no traced values: shapes unknown
    mm = g.call_function(torch.ops.aten.mm.default, (a, b))
    g.output(mm)
    fx.GraphModule({}, g)
    with pytest.raises(CaptureError, match="aten.mm.default failed on node mm"):
        node_flops(mm)
