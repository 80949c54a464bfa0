"""Memory budgets through the ``model-opt`` command: schedule, bench and max-batch."""

import json

import attrs
import pytest

from model_ir import Graph, save_graph, simulate, working_set_bound
from model_ir.cli import main
from model_ir.testing.examples import training_chain


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def chain_graph() -> Graph:
    """Four 1 MiB activations the backward pass reads back in reverse."""
    return training_chain(4, size=1 << 20, small=64, persistent=64, flops=lambda k: 1000, total_flops=8000)


def test_schedule_and_bench_a_graph_under_a_budget(tmp_path, capsys):
    g = chain_graph()
    path = tmp_path / "chain.json"
    save_graph(g, path)
    budget = 3 << 20  # below every order's 4 MiB, above the working sets' 2 MiB
    assert working_set_bound(g) < budget < simulate(g).peak_bytes
    code, out, err = run(["schedule", str(path), "--budget", "3MiB", "--json", "--quiet", "--time-limit", "5"],
                         capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["fits_budget"] and r["peak_bytes"] <= budget and r["recomputed_ops"] > 0
    assert r["reorder_lower_bound_bytes"] > budget  # reordering alone provably cannot
    assert simulate(g, r["order"]).peak_bytes == r["peak_bytes"]
    code, out, err = run(["schedule", str(path), "--budget", "3MiB", "--quiet", "--time-limit", "5"], capsys)
    assert code == 0 and "memory budget:" in out and "fits;" in out

    code, out, err = run(["bench", "--graph", str(path), "--budget", "3MiB", "--out", str(tmp_path / "b"),
                          "--json", "--quiet", "--time-limit", "5"], capsys)
    assert code == 0, err
    f = json.loads(out)
    assert f["fits_budget"] and f["optimized_peak_bytes"] <= budget
    assert f["recompute_flops"] == 1000 * f["recomputed_ops"]
    assert f["recompute_overhead"] == f["recompute_flops"] / 8000
    assert f["recompute_forward_ratio"] == f["recompute_flops"] / 4000
    # The arena packs the recomputed instances too: never below the transient peak.
    assert f["arena_bytes"] >= f["optimized_transient_peak_bytes"]
    code, out, err = run(["bench", "--graph", str(path), "--budget", "3MiB", "--out", str(tmp_path / "c"),
                          "--quiet", "--time-limit", "5"], capsys)
    assert code == 0 and "memory budget" in out and "recomputes" in out


def test_bench_says_when_the_exact_search_proves_a_budget_unreachable(tmp_path, capsys):
    from model_ir.testing.examples import two_gradients

    path = tmp_path / "g.json"
    save_graph(two_gradients(1 << 10), path)  # no plan under 32 KiB, working sets 24 KiB
    code, out, err = run(["bench", "--graph", str(path), "--budget", "28KiB", "--out", str(tmp_path / "b"),
                          "--json", "--quiet", "--time-limit", "20"], capsys)
    assert code == 3, err  # a plan that misses its budget, not proven for every plan: 3, as schedule and place
    f = json.loads(out)
    assert not f["fits_budget"] and f["no_fit_within_runs"] == 2
    assert json.loads((tmp_path / "b" / "results.json").read_text())["results"][0]["fits_budget"] is False
    code, out, err = run(["bench", "--graph", str(path), "--budget", "28KiB", "--out", str(tmp_path / "c"),
                          "--quiet", "--time-limit", "20"], capsys)
    assert code == 3 and "does NOT fit" in out and "no plan running each op at most 2 times fits it (proven)" in out
    assert "below the lower bound" not in out
    code, out, err = run(["bench", "--graph", str(path), "--budget", "20KiB", "--out", str(tmp_path / "d"),
                          "--quiet", "--time-limit", "5"], capsys)
    assert code == 1 and "does NOT fit" in out and "the budget is below the lower bound" in out


@pytest.mark.parametrize("budget, status", [(99, 1), (100, 3), (150, 0)])
def test_one_zoo_run_exits_on_its_budget_as_a_graph_file_does(tmp_path, capsys, monkeypatch, budget, status):
    # 1 below the lower bound, 3 above it when no plan that fits was found; a single model
    # run said 1 for both (a sweep's exit stays 1 for any miss)
    from model_bench import sweep

    def one_run(models, *args, **kw):
        return [{"model": m, "memory_budget": budget, "fits_budget": budget >= 150, "lower_bound_bytes": 100}
                for m in models]

    monkeypatch.setattr(sweep, "run_sweep", one_run)
    code, _, err = run(["bench", "--model", "tiny-mlp", "--budget", str(budget), "--json", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == status, err
    code, _, err = run(["bench", "--models", "tiny-mlp,tiny-cnn", "--budget", str(budget), "--json", "--quiet",
                        "--out", str(tmp_path)], capsys)
    assert code == (status and 1), err


def test_bad_budgets_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "chain.json"
    save_graph(chain_graph(), path)
    code, _, err = run(["bench", "--graph", str(path), "--budget", "lots", "--quiet"], capsys)
    assert code != 0 and "lots" in err and "Traceback" not in err
    code, _, err = run(["schedule", str(path), "--budget", "-1", "--quiet"], capsys)
    assert code != 0 and "Traceback" not in err


def test_max_batch_with_recomputation_fits_at_least_the_reorder_only_batch(capsys):
    code, out, err = run(["bench", "max-batch", "--model", "tiny-mlp", "--memory", "2MiB", "--limit", "256",
                          "--measure", "never", "--recompute", "--json", "--quiet", "--device", "cpu",
                          "--time-limit", "2"], capsys)
    assert code == 0, err
    r = json.loads(out)
    ob, rb = r["optimized_max_batch_size"], r["recompute_max_batch_size"]
    assert rb >= ob > 0
    probes = {p["batch_size"]: p for p in r["probes"]}
    assert probes[rb]["recompute_bytes"] <= 2 << 20
    assert r["recompute_source"].startswith("simulated")


def test_bench_under_a_budget_plans_the_step_optimize_runs():
    """``bench --budget`` captures the forward pass made recomputable, as
    ``optimize(memory_budget=...)`` does: bert-tiny's dropout keeps boolean masks."""
    pytest.importorskip("transformers")
    from model_bench.pipeline import BenchSettings, run_bench

    settings = BenchSettings(time_limit=2, device="cpu")
    plain = run_bench("bert-tiny", "train", 2, settings)
    budget = plain.figures["optimized_peak_bytes"] - 100_000  # below every order: recomputes
    run = run_bench("bert-tiny", "train", 2, attrs.evolve(settings, memory_budget=budget))
    assert run.graph.meta.get("functional_inplace") is True and "functional_inplace" not in plain.graph.meta
    assert not any(op.target == "aten.ne.Scalar" for op in plain.graph.ops)
    assert any(op.target == "aten.ne.Scalar" and op.meta["phase"] == "forward" for op in run.graph.ops)
    assert run.figures["fits_budget"]
    # and bounds what optimize()'s budget does: the generator states kept to replay
    # dropout, and the arena's temporaries where larger than the kernels'.
    sizes = {b.id: b.size for b in run.graph.buffers}
    assert "rng_states" in sizes and "rng_states" not in {b.id for b in plain.graph.buffers}
    temporaries = run.graph.meta.get("arena_temporaries") or {}
    assert temporaries and all(sizes[f"workspace:{op}"] >= n for op, n in temporaries.items())
    # What optimize() would hold under it: the executor auto picks there (never the
    # program executor, eager's unbudgeted order; on the CPU, reorder), within the budget
    # (the generator states counted once: bert-tiny held 40 KiB above it counting them twice).
    for suffix in ("", "_expandable"):
        assert run.figures[f"runtime_executor{suffix}"] == "reorder"
        assert run.figures[f"runtime_total{suffix}_bytes"] <= run.figures["memory_budget"]
    assert run.figures["recomputed_ops"] and plain.figures["runtime_total_bytes"] > budget


def test_bench_says_nothing_optimize_would_hold_under_a_budget_no_plan_fits():
    """optimize(memory_budget=...) raises BudgetError when no plan fits: bench's runtime
    figures (the report's optimize() column) are absent then (they said 69 KiB with the
    reorder executor for tiny-cnn under a budget below its bound)."""
    from model_bench.pipeline import BenchSettings, run_bench

    f = run_bench("tiny-cnn", "train", 2, BenchSettings(time_limit=1, device="cpu", memory_budget=35328)).figures
    assert not f["fits_budget"] and f["memory_budget"] < f["lower_bound_bytes"]
    assert "runtime_total_bytes" not in f and "runtime_saving_vs_strongest" not in f
