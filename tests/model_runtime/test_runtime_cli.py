"""``model-opt run``: a zoo model optimized, run, and compared with eager."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from model_ir.cli import main  # noqa: E402
from model_ir.plugins import providers  # noqa: E402


@pytest.fixture(autouse=True)
def _needs_zoo():
    try:
        if "tiny-mlp" not in providers("model_opt_models"):
            pytest.skip("no zoo model tiny-mlp (model-bench not installed)")
    except Exception:  # noqa: BLE001 - the hook itself is missing without model-bench
        pytest.skip("no model zoo plugin installed")


def test_run_compares_with_eager_bitwise(capsys):
    assert main(["run", "tiny-mlp", "--batch-size", "4", "--steps", "3", "--time-limit", "0.5",
                 "--executor", "arena", "--compare-eager", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["bitwise_equal_to_eager"] is True
    assert figures["executor"] == "arena" and figures["arena_bytes"] > 0
    assert figures["median_step_seconds"] > 0 and figures["step_time_ratio"] > 0


def test_run_report_save_and_reuse_plan(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "2", "--time-limit", "0.5",
                 "--executor", "reorder", "--save-plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "executor reorder" in out and "median step time" in out and plan.exists()
    before = plan.read_text()
    assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "1", "--executor", "reorder",
                 "--plan", str(plan), "--save-plan", str(plan)]) == 2  # never overwrites
    assert "is the input file" in capsys.readouterr().err and plan.read_text() == before
    assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "1", "--executor", "reorder",
                 "--plan", str(plan)]) == 0
    assert main(["run", "tiny-cnn", "--batch-size", "4", "--steps", "1", "--executor", "reorder",
                 "--plan", str(plan)]) == 2  # another batch size: another step, and where it differs
    assert "another step (buffer 'input:inputs[0]': size 6144 B in the plan, 12288 B now)" in capsys.readouterr().err


def test_run_unknown_model_and_bad_steps(capsys):
    assert main(["run", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["run", "tiny-mlp", "--steps", "0"]) == 2
    assert "--steps: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("nosuch", "is not a device name"), ("meta", "cpu or cuda"), ("cuda:99", "CUDA device"),
])
def test_run_bad_device_is_one_error_line(device, message, capsys):
    assert main(["run", "tiny-mlp", "--device", device]) == 2
    assert message in capsys.readouterr().err


def test_run_out_of_memory_is_one_line_naming_the_batch_size(capsys, monkeypatch):
    # Building the batch: 100000000000 x 32 floats (12.8 TB) cannot be allocated.
    assert main(["run", "tiny-mlp", "--batch-size", "100000000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("model-opt: error: batch size 100000000000 does not fit in cpu memory"), err
    assert err.count("\n") == 1
    # Running the step: PyTorch's allocators raise RuntimeError (CPU) or OutOfMemoryError (CUDA).
    import torch

    import model_runtime.optimized_step as optimized_step

    for error in (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 12800000000000 bytes."),
                  torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")):
        def optimize(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(optimized_step, "optimize", optimize)
        assert main(["run", "tiny-mlp", "--batch-size", "3", "--steps", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("model-opt: error: batch size 3 does not fit in cpu memory"), err
        assert err.count("\n") == 1
    # Any other failure is not the user's: it stays an exception.
    monkeypatch.setattr(optimized_step, "optimize", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        main(["run", "tiny-mlp", "--batch-size", "3", "--steps", "1"])


def test_run_save_plan_into_missing_folder_fails_before_running(tmp_path, capsys):
    assert main(["run", "tiny-mlp", "--save-plan", str(tmp_path / "no" / "plan.json")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_run_save_plan_over_an_existing_file_says_force_before_running(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text("keep me")
    assert main(["run", "tiny-mlp", "--save-plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert "--save-plan" in err and "file exists; pass --force" in err and "overwrite=" not in err
    assert plan.read_text() == "keep me"


def test_measure_runs_each_variant_in_a_fresh_process(capsys):
    """The default variants, then those the GPU script measures too (auto: the executor
    optimize() picks, reorder on the CPU; program)."""
    assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "2", "--time-limit", "0.5",
                 "--measure", "--allocators", "default", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    runs = result["runs"]["default"]
    assert set(runs) == {"eager", "reorder", "arena"}
    assert all("error" not in r for r in runs.values()), runs
    assert result["first_loss_equal"]["default"] == {"reorder": True, "arena": True}
    assert runs["arena"]["plan"]["arena_bytes"] > 0 and runs["arena"]["median_step_seconds"] > 0
    assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "2", "--time-limit", "0.5",
                 "--measure", "--allocators", "default", "--variants", "eager,auto,program", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    runs = result["runs"]["default"]
    assert {name: r["plan"]["executor"] for name, r in runs.items() if name != "eager"} == \
        {"auto": "reorder", "program": "program"}
    assert result["first_loss_equal"]["default"] == {"auto": True, "program": True}


def test_measure_without_eager_says_nothing_of_equality(monkeypatch):
    """With no eager variant to compare with (not asked for, or failed) the first losses'
    equality is unknown: it said False, printed "NO" (not bitwise eager's)."""
    import model_runtime.measured_runs as measured_runs

    monkeypatch.setattr(measured_runs, "spawn_variant", lambda spec, alloc: {"losses": ["0x1p+0"]})
    got = measured_runs.measure_model("tiny-mlp", variants=("reorder", "arena"), allocs=("default",), device="cpu")
    assert got["first_loss_equal"] == {"default": {}}
    got = measured_runs.measure_model("tiny-mlp", variants=("eager", "arena"), allocs=("default",), device="cpu")
    assert got["first_loss_equal"] == {"default": {"arena": True}}


def test_measure_reports_a_crashed_variant_and_goes_on():
    """A variant that dies (here: an unknown model inside the child) is an error entry,
    not the end of the report."""
    from model_runtime.measured_runs import spawn_variant

    got = spawn_variant({"model": "no-such-model", "mode": "train", "batch_size": 1, "optimizer": "sgd",
                         "device": "cpu", "variant": "eager", "steps": 1, "warmup": 0}, "default")
    assert "error" in got and "exit status" in got["error"]


def test_measure_fails_when_every_variant_failed(capsys, monkeypatch):
    """Exit 1 when no variant ran (here every child fails); 0 when one did; an empty
    --variants list is a user mistake."""
    import model_runtime.measured_runs as measured_runs

    monkeypatch.setattr(measured_runs, "spawn_variant", lambda spec, alloc: {"error": "RuntimeError: boom"})
    argv = ["run", "tiny-mlp", "--batch-size", "2", "--measure", "--variants", "arena"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out.count("FAILED") == 2 and "every variant failed" in err
    assert main([*argv, "--json"]) == 1
    capsys.readouterr()
    monkeypatch.setattr(measured_runs, "spawn_variant",
                        lambda spec, alloc: {"error": "boom"} if alloc == "default" else
                        {"torch": "x", "median_step_seconds": 0.001, "losses": ["0x1p+0"]})
    assert main(argv) == 0
    assert "every variant failed" not in capsys.readouterr().err
    for variants in (",", ""):
        assert main(["run", "tiny-mlp", "--measure", "--variants", variants]) == 2
        err = capsys.readouterr().err
        assert err.startswith("model-opt: error: --variants: the list is empty") and err.count("\n") == 1


def test_conflicting_plan_options_are_refused(tmp_path, capsys):
    """--budget is not silently dropped for a --plan; --measure does not silently skip
    --plan or --save-plan (checked before the plan file is read or any step runs)."""
    plan = str(tmp_path / "sp.json")
    for argv, needle in [
        (["--plan", plan, "--budget", "1KiB"], "--budget plans the step under a memory budget; --plan"),
        (["--measure", "--plan", plan], "--plan and --save-plan with --measure"),
        (["--measure", "--save-plan", plan], "--plan and --save-plan with --measure"),
        # options that did nothing, silently (before: exit 0)
        (["--variants", "bogus"], "--variants names what --measure runs; add --measure"),
        (["--allocators", "expandable"], "--allocators names what --measure runs"),
        (["--mode", "eval", "--optimizer", "adam"], "--optimizer adam: an eval step runs no optimizer"),
        (["--measure", "--executor", "arena"], "--executor arena with --measure: name the variants instead"),
        (["--measure", "--compare-eager"], "--compare-eager with --measure: the eager variant is the comparison"),
    ]:
        assert main(["run", "tiny-mlp", "--batch-size", "2", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("model-opt: error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "sp.json").exists()


def test_measure_rejects_an_unknown_allocator_setting(capsys):
    assert main(["run", "tiny-cnn", "--measure", "--allocators", "bogus"]) == 2
    assert "--allocators" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, error", [
    ("--variants", "eager,,arena", "--variants: an empty value in the list 'eager,,arena'"),
    ("--variants", "eager,eager", "--variants: 'eager' is named twice"),
    ("--allocators", ",", "--allocators: the list is empty"),
    ("--allocators", "default,default", "--allocators: 'default' is named twice")])
def test_measure_lists_are_checked_as_bench_checks_its_lists(flag, value, error, capsys):
    """A value left out or named twice is refused (each variant is one entry of the
    results: a second would have replaced the first), as bench refuses '1,,2'."""
    assert main(["run", "tiny-cnn", "--measure", flag, value]) == 2
    err = capsys.readouterr().err
    assert error in err and err.count("\n") == 1, err


def test_run_takes_the_model_as_bench_and_capture_do(capsys):
    assert main(["run", "--model", "tiny-mlp", "--batch-size", "4", "--steps", "1", "--time-limit", "0.5",
                 "--executor", "reorder", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["executor"] == "reorder"
    for argv, message in ((["run"], "name a zoo model"),
                          (["run", "tiny-mlp", "--model", "tiny-cnn"], "two models named")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0


def test_cuda_graph_flags_are_checked(capsys, monkeypatch):
    """CUDA graphs on a CPU run are refused before anything is planned or spawned."""
    import model_runtime.cli_run as cli_run
    import model_runtime.measured_runs as measured_runs

    def never(*args, **kwargs):
        raise AssertionError("planned or ran a step for a refused option")

    monkeypatch.setattr(cli_run, "_run_model", never)
    monkeypatch.setattr(measured_runs, "spawn_variant", never)
    for argv, message in [
        (["--cuda-graph"], "--cuda-graph: CUDA graphs need --device cuda (this run is on cpu)"),
        (["--measure", "--variants", "eager,arena+graph"], "--variants arena+graph: CUDA graphs need --device cuda"),
        (["--cuda-graph", "--measure"], "--variants eager,arena,arena+graph"),
        (["--measure", "--variants", "eager,bogus+graph"], "bogus"),
    ]:
        assert main(["run", "tiny-mlp", "--time-limit", "0.5", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("model-opt: error: ") and message in err and err.count("\n") == 1, err


def test_exclusive_runs_wait_for_the_timing_lock(tmp_path, monkeypatch):
    """``exclusive``: a child plans, then waits for the lock before running its steps."""
    import fcntl
    import threading

    import model_runtime.optimized_step as optimized_step
    from model_runtime.measured_runs import run_variant

    planned, got = threading.Event(), {}
    plan = optimized_step.optimize

    def optimize_then_signal(*args, **kwargs):
        step = plan(*args, **kwargs)
        planned.set()
        return step

    monkeypatch.setattr(optimized_step, "optimize", optimize_then_signal)
    lock_path = tmp_path / "timing.lock"
    spec = {"model": "tiny-mlp", "mode": "train", "batch_size": 2, "optimizer": "sgd", "device": "cpu",
            "variant": "arena", "steps": 1, "warmup": 0, "time_limit": 0.5, "exclusive": str(lock_path)}
    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = threading.Thread(target=lambda: got.update(run_variant(spec)))
        child.start()
        assert planned.wait(120)
        child.join(1.0)  # a tiny-mlp step takes milliseconds: only the lock holds it
        assert child.is_alive() and not got
    child.join(60)
    assert len(got["losses"]) == 1 and got["plan"]["arena_bytes"] > 0
    assert got["step_outputs_released"] is True  # runtime_backtest.py: no previous outputs held


@pytest.mark.parametrize("name, mode", [("bert-tiny", "train"), ("gpt2-tiny", "train"), ("opt-tiny", "train"),
                                        ("bert-tiny", "eval")])
def test_hugging_face_steps_are_bitwise_eager_with_the_arena(name, mode, capsys):
    """Three arena steps of the Hugging Face test models equal eager's bitwise: their
    attention softmax, embeddings and embedding gradients are slot writes
    (model_runtime.slot_writes), and the updated weights feed the next steps."""
    pytest.importorskip("transformers")
    assert main(["run", name, "--mode", mode, "--batch-size", "2", "--steps", "3", "--time-limit", "1",
                 "--executor", "arena", "--compare-eager", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["bitwise_equal_to_eager"] is True and figures["executor"] == "arena"


def test_run_and_measure_under_bf16_autocast(capsys):
    """``--autocast bf16``: the optimized step and the eager reference (in-process and in
    each measured child) run the AMP recipe; the optimized step stays bitwise eager's."""
    from model_runtime.cli_run import run_model

    step, figures = run_model("tiny-cnn", batch_size=2, steps=2, time_limit=0.5, compare_eager=True,
                              autocast="bfloat16")
    assert figures["bitwise_equal_to_eager"] is True and step.plan.graph.meta["autocast"] == "bfloat16"
    assert any(b.dtype == "bfloat16" for b in step.plan.graph.buffers)

    def measured(*flags):
        assert main(["run", "tiny-cnn", "--batch-size", "2", "--steps", "1", "--time-limit", "0.5", "--measure",
                     "--allocators", "default", "--variants", "eager,arena", "--json", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    amp, fp32 = measured("--autocast", "bf16"), measured()
    assert amp["autocast"] == "bfloat16" and "autocast" not in fp32
    assert amp["first_loss_equal"]["default"] == {"arena": True}
    assert amp["runs"]["default"]["eager"]["losses"] != fp32["runs"]["default"]["eager"]["losses"]
    from model_runtime.errors import RuntimeLayerError
    from model_runtime.measured_runs import measure_model, render_measurement

    with pytest.raises(RuntimeLayerError, match="unknown autocast dtype 'fp16'; choose bf16, bfloat16"):
        measure_model("tiny-cnn", autocast="fp16")
    with pytest.raises(RuntimeLayerError, match="unknown autocast dtype"):
        run_model("tiny-cnn", autocast="float16")

    assert render_measurement(amp).startswith("tiny-cnn train batch 2 under bfloat16 autocast on cpu")
