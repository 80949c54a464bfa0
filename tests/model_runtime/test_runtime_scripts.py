"""The benchmark scripts run (tiny settings)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2] / "packages" / "model-runtime"


def _load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_time_benchmark_prints_ratios(monkeypatch, capsys):
    bench = _load("benchmarks/step_time.py")
    monkeypatch.setitem(bench.MODELS, "mlp", (lambda: bench.mlp(16, 2), bench.MODELS["mlp"][1],
                                              lambda: torch.randn(4, 16), None))
    assert bench.main(["--models", "mlp", "--rounds", "3", "--warmup", "1", "--time-limit", "0.2", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(row["ratio_to_eager"]) == {"eager", "reorder", "arena"} and row["ratio_to_eager"]["eager"] == 1.0
    assert all(v > 0 for v in row["median_seconds"].values())


def test_beyond_zoo_checks_a_case_bitwise_and_against_its_plan(tmp_path):
    """beyond_zoo.py on one small case: both executors bitwise eager's, the steady step
    allocation by allocation within its plan (the JSON the README's figures come from)."""
    bench = _load("benchmarks/beyond_zoo.py")
    out, threads = tmp_path / "rows.json", torch.get_num_threads()
    try:
        assert bench.main(["distillation", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # main() runs on one
    rows = json.loads(out.read_text())["rows"]
    assert [r["executor"] for r in rows] == ["reorder", "arena"] and all(r["bitwise"] for r in rows)
    assert all(0 <= r["planned_bytes"] - r["exact_measured_bytes"] <= 128 for r in rows), rows


def test_beyond_zoo_under_a_budget_recomputes_and_stays_within_it(tmp_path):
    """--budget-share: the step planned under a budget half-way to the recomputation bound
    fits it by recomputing, is bitwise eager's and allocates no more than planned."""
    bench = _load("benchmarks/beyond_zoo.py")
    out, threads = tmp_path / "rows.json", torch.get_num_threads()
    try:
        assert bench.main(["layers", "--executors", "reorder", "--budget-share", "0.5", "--time-limit", "3",
                           "--json", str(out)]) == 0
        for bad in (["--budget-share", "1.5"], ["--time-limit", "0"]):
            with pytest.raises(SystemExit):
                bench.main(["layers", *bad])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["time_limit"] == 3
    (row,) = json.loads(out.read_text())["rows"]
    assert row["fits"] and row["bitwise"] and row["recomputed_ops"] > 0, row
    assert row["bound_bytes"] <= row["peak_bytes"] <= row["budget_bytes"] < row["unbudgeted_peak_bytes"], row
    assert 0.99 * row["planned_bytes"] <= row["exact_measured_bytes"] <= row["planned_bytes"], row


def test_gpu_matrix_renders_the_committed_h200_results():
    """The measured table of docs/measured-gpu.md is rendered from the committed results file."""
    matrix = _load("benchmarks/gpu_matrix.py")
    text = matrix.render(str(ROOT / "benchmarks" / "results" / "h200-torch2.11-2026-11-30.json"))
    assert "NVIDIA H200" in text and "| alexnet b32 | expandable |" in text
    assert "51 of 51 runs completed" in text


def test_gpu_graphs_renders_the_committed_h200_results():
    """The CUDA-graph tables of docs/measured-gpu.md come from the committed results file."""
    graphs = _load("benchmarks/gpu_graphs.py")
    text = graphs.render([str(ROOT / "benchmarks" / "results" / "h200-torch2.11-2026-11-30-graphs.json")])
    assert "NVIDIA H200" in text and "| vit_b_16 b1 | 22.27 | 15.36 | 8.23 | 25.55 | 8.43 |" in text
    assert "| bert-base b1 | expandable | 1094 / 1164 ‡ |" in text and "‡ eager measured with a loop that held" in text
    assert "bitwise eager's in 56 optimized runs" in text and "(warm-up included) in 40." in text


def test_gpu_matrix_renders_auto_and_program_runs(tmp_path):
    """Results with the executor auto runs (and the program executor): a table of what
    auto ran and saved, and how often it reserved more than eager over the zoo."""
    matrix = _load("benchmarks/gpu_matrix.py")
    mib = 1 << 20

    def run(kind, model, batch, variant, alloc, reserved, mode="train", **extra):
        spec = {"model": model, "mode": mode, "batch_size": batch, "variant": variant}
        result = {"gpu": "NVIDIA H200", "torch": "2.11", "max_allocated_bytes": reserved // 2,
                  "max_reserved_bytes": reserved, "losses": ["0x1p+0"], "output_released": True, **extra}
        return {"kind": kind, "spec": spec, "alloc": alloc, "result": result}

    plan = {"executor": "reorder", "persistent_bytes": 100 * mib, "reorder_transient_bytes": 300 * mib}
    results = [run("matrix", "gpt2", 1, "eager", "expandable", 500 * mib),
               run("matrix", "gpt2", 1, "auto", "expandable", 400 * mib, plan=plan,
                   persistent_allocated_bytes=100 * mib),
               run("matrix", "gpt2", 1, "program", "expandable", 510 * mib, plan={"executor": "program"}),
               run("zoo", "vgg11", 32, "eager", "default", 200 * mib, mode="eval"),
               run("zoo", "vgg11", 32, "auto", "default", 210 * mib, mode="eval", plan=plan),
               run("time", "alexnet", 32, "eager", "expandable", 0, median_step_seconds=0.004),
               run("time", "alexnet", 32, "auto", "expandable", 0, median_step_seconds=0.005)]
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(results))
    text = matrix.render(str(path))
    assert "| gpt2 b1 | expandable | 500 | reorder | 400 | 400 | -20% | 510 | +2% |" in text
    assert "| gpt2 b1 | default | see JSON (failed run) |" in text  # not run
    assert "over the zoo (the same runs): 1 of 1 completed; reserved more than eager in 1 (vgg11 eval b32)" in text
    assert "| model (train) | eager ms | auto ms | auto / eager |" in text
    assert "| alexnet b32 | 4.00 | 5.00 | 1.25 |" in text


def _record(model, mode, batch, variant, alloc, *, plan=None, **result):
    return {"kind": "matrix", "alloc": alloc,
            "spec": {"model": model, "mode": mode, "batch_size": batch, "variant": variant, "device": "cuda"},
            "result": {"max_reserved_bytes": 1, "max_allocated_bytes": 1, "plan": plan or {}, **result}}


def test_runtime_backtest_reads_how_each_run_ran():
    """Each measured run is simulated as its executor ran: the scheduler's order, outside
    fallbacks and no first block before those figures were recorded; eval runs before
    2026-11-30 01:38 held the previous step's outputs."""
    bt = _load("benchmarks/runtime_backtest.py")
    old = bt.configuration(_record("alexnet", "eval", 32, "arena", "default", plan={"executor": "arena"}))
    assert old == {"executor": "arena", "executors": (), "first_block": False, "fallback_results": "outside",
                   "expandable": False, "outputs_held": True}
    new = bt.configuration(_record("gpt2", "train", 1, "auto", "expandable", step_outputs_released=True, plan={
        "executor": "reorder", "order_source": "optimizer-in-backward", "fallback_copied_bytes": 0,
        "warm_block_bytes": 0, "reorder_warm_block_bytes": 0}))
    assert new == {"executor": "reorder", "executors": ("arena", "reorder"), "first_block": True,
                   "fallback_results": "auto", "expandable": True, "outputs_held": False}
    # the arena run's first block is the arena's, not the reorder executor's
    assert not bt.configuration(_record("m", "train", 1, "arena", "default", plan={"reorder_warm_block_bytes": 0,
                                                                                  "order_source": "s"}))["first_block"]
    records = [_record("a", "train", 1, "eager", "default"), _record("a", "train", 1, "arena+graph", "default"),
               _record("a", "train", 1, "arena", "default"), _record("a", "train", 1, "arena", "default"),
               _record("a", "train", 1, "arena", "expandable"), {**_record("a", "train", 1, "reorder", "default"),
                                                                "result": {"error": "crashed"}}]
    assert [r["alloc"] for r in bt.measured_runs(records)] == ["default", "expandable"]


def test_runtime_backtest_without_a_first_block_replays_the_allocator_as_it_comes():
    bt = _load("benchmarks/runtime_backtest.py")
    from model_ir import Lifetime
    from model_runtime import beside_arena

    mib = 1 << 20
    # requests that grow: a segment per new size without the block, one split segment with it
    step = [Lifetime(f"w{i}", 2 * i, 2 * i + 1, (12 + 2 * i) * mib) for i in range(4)]
    warmed, block = beside_arena.caching_reserve(step)
    assert block > 0
    with bt.first_block(False):
        assert beside_arena.caching_reserve(step) == (beside_arena.caching_allocator_bytes(step), 0)
        assert beside_arena.caching_reserve(step)[0] > warmed
    assert beside_arena.caching_reserve(step) == (warmed, block)
    with pytest.raises(RuntimeError), bt.first_block(False):
        raise RuntimeError
    assert beside_arena.caching_reserve(step) == (warmed, block)


def test_runtime_backtest_reproduces_a_measured_h200_run(capsys):
    """alexnet train b32, reorder executor, expandable segments, as it ran on the H200 on
    2026-11-30 (committed results): the runtime's simulation today gives the measured
    reserved and allocated bytes within 1%."""
    bt = _load("benchmarks/runtime_backtest.py")
    with open(ROOT / "benchmarks" / "results" / "h200-torch2.11-2026-11-30.json") as f:
        records = [r for r in json.load(f) if r["kind"] == "matrix" and r["alloc"] == "expandable"
                   and r["spec"]["model"] == "alexnet" and r["spec"]["variant"] == "reorder"]
    (row,) = bt.backtest(records, time_limit=5)
    assert row["executors"] == [] and not row["first_block"]
    assert abs(row["reserved_bytes"] / row["measured_reserved_bytes"] - 1) < 0.01
    assert abs(row["allocated_bytes"] / row["measured_allocated_bytes"] - 1) < 0.01
    assert "train reorder  expandable   1 runs: reserved within 5% in 1 (median" in bt.summary([row])


def test_runtime_backtest_says_whether_the_simulation_picks_the_executor_that_measured_less():
    bt = _load("benchmarks/runtime_backtest.py")

    def row(model, executor, simulated, measured, alloc="default"):
        return {"model": model, "mode": "train", "batch_size": 1, "alloc": alloc, "executor": executor,
                "reserved_bytes": simulated, "measured_reserved_bytes": measured}

    rows = [row("a", "arena", 90, 100), row("a", "reorder", 95, 110),  # right
            row("b", "arena", 90, 120), row("b", "reorder", 95, 100),  # wrong: arena picked, 20% more
            row("b", "arena", 90, 120, "expandable"), row("c", "arena", 1, 1)]  # no pair
    assert bt.choices(rows) == ("  arena or reorder: the simulation's pick reserved least in 1 of 2 cases "
                                "(not: b train b1 default: arena, +20.0%)")
    assert bt.choices(rows[:2]).endswith("in 1 of 1 cases") and bt.choices(rows[4:]) == ""


def test_runtime_backtest_names_a_bad_results_file(tmp_path, capsys):
    bt = _load("benchmarks/runtime_backtest.py")
    for name, text in (("missing.json", None), ("broken.json", "{"), ("dict.json", '{"runs": []}')):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert bt.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"runtime_backtest: error: {path}") and err.count("\n") == 1
    (tmp_path / "empty.json").write_text("[]")
    assert bt.main([str(tmp_path / "empty.json")]) == 0
    assert "no completed run" in capsys.readouterr().out


def test_gpu_matrix_runs_again_alone_what_ran_out_of_memory_beside_others(tmp_path, monkeypatch):
    """The matrix runs 14 children on one GPU at a time: a run out of device memory beside
    them is run again alone (an H100 holds fewer gpt2 b32 steps than the H200), keeping its
    failure only when the run alone fails too; every case is recorded once, the file whole."""
    from model_runtime import measured_runs

    matrix = _load("benchmarks/gpu_matrix.py")
    calls: list[tuple] = []

    def spawn(spec, alloc, timeout):
        key = (spec["model"], spec["mode"], spec["batch_size"], spec["variant"], alloc)
        calls.append(key)
        if spec["model"] == "gpt2" and spec["batch_size"] == 32 and calls.count(key) == 1:
            return {"error": "exit status 1: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"}
        if spec["model"] == "vgg16" and spec["mode"] == "eval":
            return {"error": "exit status 1: RuntimeError: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"}
        return {"max_reserved_bytes": 1}

    monkeypatch.setattr(measured_runs, "spawn_variant", spawn)
    out = tmp_path / "runtime.json"
    assert matrix.run(str(out), 1000) == 0
    records = json.loads(out.read_text())
    keys = [(r["kind"], r["spec"]["model"], r["spec"]["mode"], r["spec"]["batch_size"], r["spec"]["variant"],
             r["alloc"]) for r in records]
    assert len(keys) == len(set(keys))
    gpt2 = [r for r in records if r["spec"]["model"] == "gpt2" and r["spec"]["batch_size"] == 32]
    assert gpt2 and all(r["result"] == {"max_reserved_bytes": 1} and r["alone"] for r in gpt2)
    vgg = [r for r in records if r["spec"]["model"] == "vgg16" and r["spec"]["mode"] == "eval"]
    assert vgg and all("CUBLAS_STATUS_ALLOC_FAILED" in r["result"]["error"] and r["alone"] for r in vgg)
    assert not any(r.get("alone") for r in records if r["spec"]["model"] not in ("gpt2", "vgg16"))
    assert measured_runs.out_of_memory({"error": "killed by signal 11"}) is False
