"""``bench --measure``: measured figures merged into the report next to the simulated ones.

The measurement itself needs a CUDA GPU (``tests/model_runtime/test_runtime_gpu.py``,
``-m gpu``); here it is replaced by a recorded result of the same shape.
"""

from model_bench.reports import markdown_summary, measured_table
from model_ir.cli import main
from model_runtime.measured_runs import measured_figures

MiB = 1 << 20


def fake_result(model="tiny-mlp", mode="train", batch_size=2, **_):
    def run(alloc_mib, reserved_mib):
        return {"torch": "2.11.0+cu130", "gpu": "NVIDIA H200", "max_allocated_bytes": alloc_mib * MiB,
                "max_reserved_bytes": reserved_mib * MiB, "median_step_seconds": 0.01, "losses": ["0x1p+0"]}
    return {"model": model, "mode": mode, "batch_size": batch_size, "optimizer": "sgd", "device": "cuda",
            "runs": {"default": {"eager": run(100, 120), "reorder": run(80, 110),
                                 "arena": {"error": "killed by signal 11: Fatal Python error: Segmentation fault"}},
                     "expandable": {"eager": run(100, 104), "reorder": run(80, 84), "arena": run(82, 86)}},
            "first_loss_equal": {}}


def test_measured_figures_are_flat_and_name_failures():
    f = measured_figures(fake_result())
    assert f["measured_gpu"] == "NVIDIA H200" and f["measured_torch"] == "2.11.0+cu130"
    assert f["measured_eager_allocated_bytes"] == 100 * MiB and f["measured_eager_reserved_bytes"] == 120 * MiB
    assert f["measured_reorder_reserved_expandable_bytes"] == 84 * MiB
    assert f["measured_arena_error"] == "killed by signal 11: Fatal Python error: Segmentation fault"
    assert "measured_arena_reserved_bytes" not in f and f["measured_arena_reserved_expandable_bytes"] == 86 * MiB


def test_bench_measure_merges_measured_figures_into_every_report(tmp_path, capsys, monkeypatch):
    import model_runtime.measured_runs as measured_runs

    calls = []
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr(measured_runs, "measure_model", lambda *a, **k: calls.append((a, k)) or fake_result(*a, **k))
    code = main(["bench", "--model", "tiny-mlp", "--batch-size", "2", "--measure", "--quiet", "--no-artifacts",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert calls and calls[0][0] == ("tiny-mlp",) and calls[0][1]["device"] == "cuda"
    assert "measured                on NVIDIA H200, torch 2.11.0+cu130" in out
    assert "arena                failed: killed by signal 11" in out
    # the simulated reserved bytes beside the measured ones, eager and reorder
    import re

    measured = {m.group(1): m.group(2) for m in re.finditer(r"^ {4}(eager|reorder|arena) +(.*)$", out, re.M)}
    assert measured["eager"].count(" MiB)") == measured["reorder"].count(" MiB)") == 2  # both settings
    assert "(" not in measured["arena"].split("; ")[1]  # no simulation of the arena executor's reserved
    summary = (tmp_path / "summary.md").read_text()
    assert "Measured on NVIDIA H200 (torch 2.11.0+cu130)" in summary
    assert summary.count("| tiny-mlp | train | 2 |") == 2  # the simulated table and the measured one


def test_measured_table_compares_simulated_and_measured():
    f = {"model": "m", "mode": "train", "batch_size": 32, "eager_allocated_peak_bytes": 90 * MiB,
         "eager_reserved_bytes": 120 * MiB, "eager_reserved_expandable_bytes": 100 * MiB,
         "optimized_total_bytes": 70 * MiB, "reorder_reserved_bytes": 99 * MiB,
         "reorder_reserved_expandable_bytes": 84 * MiB, **measured_figures(fake_result())}
    table = measured_table([f, {"model": "simulated only", "mode": "train", "batch_size": 1}])
    assert ("| m | train | 32 | 90 / 100 (-10%) | 120 / 120 (0%) | 100 / 104 (-4%) | 70 | 99 / 110 (-10%) | "
            "84 / 84 (0%) | 86 | 19.2% |") in table
    assert "simulated only" not in table
    assert measured_table([{"model": "x", "mode": "train", "batch_size": 1}]) == ""
    assert "Measured on" not in markdown_summary([])


def test_bench_measure_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code = main(["bench", "--model", "tiny-mlp", "--measure", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "CUDA GPU" in err


def test_simulated_vs_measured_joins_a_suite_with_gpu_matrix_results(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from model_bench.reports import simulated_vs_measured, write_results_json

    def gpu(alloc, variant, allocated, reserved, model="m"):
        return {"kind": "matrix", "alloc": alloc,
                "spec": {"model": model, "mode": "train", "batch_size": 32, "variant": variant},
                "result": {"torch": "2.11.0+cu130", "gpu": "NVIDIA H200", "max_allocated_bytes": allocated * MiB,
                           "max_reserved_bytes": reserved * MiB, "median_step_seconds": 0.01, "output_released": True}}

    gpu_results = [gpu("default", "eager", 100, 120), gpu("expandable", "eager", 100, 104),
                   gpu("expandable", "arena", 80, 84), gpu("default", "reorder", 80, 90),
                   gpu("default", "eager", 1, 1, model="not simulated"), gpu("default", "reorder", 1, 1, model="no eager")]
    suite = [{"model": "m", "mode": "train", "batch_size": 32, "eager_allocated_peak_bytes": 99 * MiB,
              "eager_reserved_bytes": 108 * MiB, "eager_reserved_expandable_bytes": 104 * MiB,
              "optimized_total_bytes": 70 * MiB, "reorder_reserved_bytes": 81 * MiB},
             {"model": "no eager", "mode": "train", "batch_size": 32},
             {"model": "never measured", "mode": "train", "batch_size": 1}]
    table = simulated_vs_measured(suite, gpu_results)
    assert "| m | train | 32 | 99 / 100 (-1%) | 108 / 120 (-10%) | 104 / 104 (0%) | 70 | 81 / 90 (-10%) | - | 84 |" in table
    assert "never measured" not in table and "not simulated" not in table and "‡" not in table
    assert "no eager" not in table  # optimized runs are compared only beside an eager one
    # A run under autocast joins the simulated row of the same autocast only.
    amp = {**gpu("default", "eager", 50, 60), "spec": {**gpu("default", "eager", 0, 0)["spec"], "autocast": "bfloat16"}}
    assert simulated_vs_measured(suite, [*gpu_results, amp]) == table
    table_amp = simulated_vs_measured([{**suite[0], "autocast": "bfloat16"}], [*gpu_results, amp])
    assert "| m | train, bfloat16 autocast | 32 | 99 / 50 (98%) | 108 / 60 (80%) |" in table_amp
    # Eager runs measured before eager_step released the model's output are marked as such.
    held = [{**g, "result": {k: v for k, v in g["result"].items() if k != "output_released"}} for g in gpu_results]
    table = simulated_vs_measured(suite, held)
    assert "| m ‡ | train | 32 | 99 / 100 (-1%) |" in table and "‡ eager measured with a loop that held" in table
    write_results_json(suite, tmp_path / "results.json")
    (tmp_path / "gpu.json").write_text(json.dumps(gpu_results))
    script = Path(__file__).parents[2] / "packages" / "model-bench" / "scripts" / "simulated_vs_measured.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "results.json"), str(tmp_path / "gpu.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "| m | train | 32 |" in done.stdout
    # A later file's run of the same model, mode, batch and allocator replaces the earlier one.
    (tmp_path / "again.json").write_text(json.dumps([gpu("default", "eager", 99, 108)]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "results.json"), str(tmp_path / "gpu.json"),
                           str(tmp_path / "again.json")], capture_output=True, text=True)
    assert done.returncode == 0 and "| m | train | 32 | 99 / 99 (0%) | 108 / 108 (0%) | 104 / 104 (0%) |" in done.stdout
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "nope.json"), str(tmp_path / "gpu.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_eager_on_gpu_script_takes_cases_around_options(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "packages" / "model-bench" / "scripts" / "eager_on_gpu.py"
    out = tmp_path / "eager.json"
    # A zero budget records every case as skipped, without starting a child.
    done = subprocess.run([sys.executable, str(script), str(out), "--trace", "--budget", "0",
                           "tiny-mlp:train:2:default", "tiny-cnn:eval:4:expandable"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = {(r["spec"]["model"], r["spec"]["mode"], r["spec"]["batch_size"], r["alloc"], r["spec"]["memory_trace"]):
           r["result"] for r in json.loads(out.read_text())}
    assert set(got) == {("tiny-mlp", "train", 2, "default", True), ("tiny-cnn", "eval", 4, "expandable", True)}
    assert all(r == {"error": "skipped: out of time"} for r in got.values())
    done = subprocess.run([sys.executable, str(script), str(out), "--budget", "0", "tiny-mlp:train:2:default",
                           "--trace-all"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [r["spec"]["memory_trace"] for r in json.loads(out.read_text())] == ["all"]
    bad = subprocess.run([sys.executable, str(script), str(out), "tiny-mlp:train:2:bogus"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "allocator one of default, expandable" in bad.stderr
    # an optimized step's allocations too: the executor is the case's fifth field
    done = subprocess.run([sys.executable, str(script), str(out), "--budget", "0", "tiny-mlp:train:2:default:auto",
                           "tiny-mlp:eval:2:default"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(r["spec"]["variant"] for r in json.loads(out.read_text())) == ["auto", "eager"]
    for text in ("tiny-mlp:train:2:default:turbo", "tiny-mlp:train:2:default:auto:x"):
        bad = subprocess.run([sys.executable, str(script), str(out), text], capture_output=True, text=True)
        assert bad.returncode == 2 and ("variant one of eager, auto" in bad.stderr or "is not" in bad.stderr)


def test_gpu_calibration_script_names_zoo_models_only(tmp_path):
    """The script a GPU session runs: with a zero budget every case is recorded as
    skipped, and every case names a zoo model, a mode and an allocator setting."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from model_bench.zoo import model_names

    script = Path(__file__).parents[2] / "packages" / "model-bench" / "scripts" / "gpu_calibration.sh"
    cases = re.findall(r"\b([\w.-]+):(train|eval):(\d+):(default|expandable)\b", script.read_text())
    assert len(cases) > 20 and {m for m, *_ in cases} <= set(model_names())
    done = subprocess.run(["bash", str(script), str(tmp_path), "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    records = [r for name in ("eval-traces", "train-traces", "lean", "amp")
               for r in json.loads((tmp_path / f"{name}.json").read_text())]
    assert len(records) == len(cases) and all(r["result"] == {"error": "skipped: out of time"} for r in records)
    assert {r["spec"].get("autocast") for r in json.loads((tmp_path / "amp.json").read_text())} == {"bfloat16"}
    assert not (tmp_path / "pytest-gpu.txt").exists()  # no GPU tests without a budget
    # first, the runtime's matrix: eager and auto before the other executors, then the zoo
    runtime = json.loads((tmp_path / "runtime.json").read_text())
    assert runtime and all(r["result"] == {"error": "skipped: out of time"} for r in runtime)
    variants = [r["spec"]["variant"] for r in runtime if r["kind"] == "matrix"]
    assert set(variants[:28]) == {"eager", "auto"} and {"reorder", "arena", "program"} <= set(variants[28:])
    assert {r["spec"]["variant"] for r in runtime if r["kind"] == "zoo"} == {"eager", "auto", "arena"}
    traced = {(r["spec"]["model"], r["spec"]["batch_size"], r["spec"]["variant"], r["alloc"])
              for r in runtime if r["spec"].get("memory_trace") == "all"}
    assert traced == {("alexnet", 32, "auto", "default"), ("bert-base", 1, "auto", "default")}


def test_eager_on_gpu_script_runs_again_alone_a_case_out_of_memory_beside_others(tmp_path, monkeypatch):
    import importlib.util
    import json
    from pathlib import Path

    from model_runtime import measured_runs

    path = Path(__file__).parents[2] / "packages" / "model-bench" / "scripts" / "eager_on_gpu.py"
    spec = importlib.util.spec_from_file_location("eager_on_gpu_under_test", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    calls = []

    def spawn(spec, alloc, timeout):
        calls.append(spec["model"])
        if spec["model"] == "tiny-cnn" and calls.count("tiny-cnn") == 1:
            return {"error": "exit status 1: torch.OutOfMemoryError: CUDA out of memory."}
        return {"max_reserved_bytes": 7}

    monkeypatch.setattr(measured_runs, "spawn_variant", spawn)
    out = tmp_path / "eager.json"
    assert script.main([str(out), "tiny-mlp:train:2:default", "tiny-cnn:eval:4:expandable"]) == 0
    got = {r["spec"]["model"]: r for r in json.loads(out.read_text())}
    assert sorted(calls) == ["tiny-cnn", "tiny-cnn", "tiny-mlp"]
    assert got["tiny-cnn"]["result"] == {"max_reserved_bytes": 7} and got["tiny-cnn"]["alone"]
    assert "alone" not in got["tiny-mlp"]
