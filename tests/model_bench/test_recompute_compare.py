"""The planner against the recomputation anchors, at the same memory cut."""

import importlib.util
from pathlib import Path

from model_bench.recompute_compare import anchor_cut, compare
from model_ir import Graph, simulate
from model_ir.testing.examples import training_chain


def chain_graph(n: int = 4) -> Graph:
    return training_chain(n, size=1 << 20, small=64, persistent=64, flops=lambda k: 1000, update=False)


def anchor(method, saved, recomputed, budget=None):
    none = 4 << 20
    return {"method": method, "budget": budget, "saved_activation_bytes": saved, "no_recompute_saved_bytes": none,
            "recomputed_flops": recomputed, "recompute_overhead": recomputed / 4000}


def test_the_planner_is_asked_for_each_anchors_cut():
    g = chain_graph()
    rows = [anchor("no-recompute", 4 << 20, 0), anchor("torch.compile", 3 << 20, 1000, 0.7),
            anchor("checkpoint-every-block", 2 << 20, 2000)]
    assert anchor_cut(rows[1]) == (1 << 20, "saved")
    assert anchor_cut({**rows[1], "peak_bytes": 5 << 20, "no_recompute_peak_bytes": 7 << 20}) == (2 << 20, "peak")
    out = compare(g, rows, fractions=(0.5,), time_limit=2)
    peak = simulate(g).peak_bytes
    base = out[0]
    assert base["matched"] == "no-recompute" and base["peak_bytes"] <= peak
    ours = {r["matched"]: r for r in out if r["method"] == "model-opt"}
    for label, cut in (("torch.compile 0.7", 1 << 20), ("checkpoint-every-block", 2 << 20)):
        r = ours[label]
        assert r["memory_budget"] == base["peak_bytes"] - cut
        assert r["fits"] and r["cut_bytes"] >= cut
        assert r["recompute_overhead"] == r["recomputed_flops"] / 4000
    # Freeing one more activation of the chain costs one recomputed forward op.
    assert ours["torch.compile 0.7"]["recomputed_flops"] <= 1000
    assert "0.5 of the transient peak" in ours


def test_an_anchor_with_a_measured_peak_is_matched_at_that_peak():
    g = chain_graph()
    peak = simulate(g).peak_bytes
    row = {**anchor("torch.compile", 3 << 20, 1000, 0.5), "peak_bytes": peak - (1 << 20),
           "no_recompute_peak_bytes": peak}
    assert anchor_cut(row) == (1 << 20, "peak")
    ours = [r for r in compare(g, [row], time_limit=2) if r["method"] == "model-opt" and r["matched"] != "no-recompute"]
    assert len(ours) == 1 and ours[0]["memory_budget"] == peak - (1 << 20) and ours[0]["fits"]


def test_the_script_writes_every_report():
    path = Path(__file__).parents[2] / "packages" / "model-bench" / "scripts" / "recompute_vs_anchors.py"
    spec = importlib.util.spec_from_file_location("recompute_vs_anchors", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = [{"model": "m", "batch_size": 2, **r} for r in compare(
        chain_graph(), [anchor("torch.compile", 3 << 20, 1000, 0.7)], fractions=(0.5,), time_limit=2)]
    text = script.markdown(rows, {"device": "cpu", "torch": "x", "date": "today"})
    assert "| m b2 | torch.compile 0.7 |" in text and "0.5 of the transient peak" in text
    assert script.plot(rows).startswith(b"\x89PNG")
