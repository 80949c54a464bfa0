"""End to end through the ``model-opt`` command on tiny models: figures, files, plots, errors."""

import csv
import json
import pickle

import pytest

from model_bench.artifacts import ARTIFACTS
from model_bench.cli_bench import format_run
from model_bench.pipeline import BenchSettings, run_bench
from model_ir import load_graph, load_plan, simulate
from model_ir.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_json_and_every_output_file(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["bench", "--model", "tiny-cnn", "--mode", "train", "--batch-size", "4",
                          "--out", str(out_dir), "--json", "--time-limit", "10"], capsys)
    assert code == 0, err
    f = json.loads(out)
    for key in ("eager_peak_bytes", "eager_reserved_bytes", "optimized_peak_bytes", "arena_bytes",
                "lower_bound_bytes", "seconds"):
        assert isinstance(f[key], (int, float)), key
    assert f["model"] == "tiny-cnn" and f["mode"] == "train" and f["batch_size"] == 4 and f["optimizer"] == "sgd"
    # Captured for CUDA by default: CUDA's kernels (emulated here), its cuBLAS workspace, and
    # cuDNN's convolution workspaces as buffers of the graph.
    assert f["device"] == "cuda" and f["kernels"] == "emulated" and f["workspace_bytes"] == 32 * 2**20
    assert f["conv_workspace_bytes"] > 0
    assert f["lower_bound_bytes"] <= f["optimized_peak_bytes"] <= f["eager_peak_bytes"] <= f["eager_reserved_bytes"]
    assert "capture" in err and "schedule" in err  # progress on stderr
    assert "optimizer in backward   peak" in format_run(f)  # the train step's third baseline
    run_dir = out_dir / "tiny-cnn-train-b4"
    for name in ARTIFACTS.values():
        assert (run_dir / name).stat().st_size > 0, name
    for name in ("live_bytes.png", "layout_plan.png", "layout_caching_allocator.png"):
        assert (run_dir / name).read_bytes().startswith(PNG)
    graph = load_graph(run_dir / "graph.json")
    assert simulate(graph).peak_bytes == f["eager_peak_bytes"]
    plan = load_plan(run_dir / "plan.json")
    assert simulate(plan.graph, plan.schedule).peak_bytes == f["optimized_peak_bytes"]
    assert plan.placement.arena_bytes == f["arena_bytes"]
    with (run_dir / "snapshot_plan.pickle").open("rb") as fh:
        snap = pickle.load(fh)
    assert sum(s["total_size"] for s in snap["segments"]) == f["optimized_total_bytes"]
    with (run_dir / "snapshot_eager.pickle").open("rb") as fh:
        assert sum(s["total_size"] for s in pickle.load(fh)["segments"]) == f["eager_reserved_bytes"]
    results = json.loads((out_dir / "results.json").read_text())
    assert results["format"] == "model-bench/1" and results["results"][0] == f
    rows = list(csv.DictReader((out_dir / "results.csv").open()))
    assert rows[0]["model"] == "tiny-cnn" and int(rows[0]["arena_bytes"]) == f["arena_bytes"]
    summary = (out_dir / "summary.md").read_text()
    assert "| tiny-cnn | train | 4 |" in summary
    assert "the memory figures above are simulated" in summary and "Measured with" not in summary
    # The legend's formulas (plan memory and best possible include the library workspace)
    # give the table's figures.
    assert "arena + the libraries' workspace" in summary and "1 - (lower bound + workspace)" in summary
    assert f["optimized_total_bytes"] == f["persistent_bytes"] + f["arena_bytes"] + f["workspace_bytes"]
    assert f["best_possible_saving_vs_strongest"] == pytest.approx(
        1 - (f["lower_bound_bytes"] + f["workspace_bytes"]) / f["strongest_baseline_bytes"])


def test_bench_text_report(tmp_path, capsys):
    code, out, err = run(["bench", "--model", "tiny-mlp", "--mode", "eval", "--batch-size", "2", "--quiet",
                          "--out", str(tmp_path), "--no-artifacts"], capsys)
    assert code == 0 and err == ""
    for needle in ("tiny-mlp eval batch 2", "eager (program order)", "reserved by the caching allocator",
                   "optimized order", "lower bound", "fragmentation", "plan memory", "seconds"):
        assert needle in out, needle
    assert "optimizer in backward" not in out  # an eval step has no optimizer to fuse into backward
    assert not (tmp_path / "tiny-mlp-eval-b2").exists()


def test_sweep_on_a_two_model_subset(tmp_path, capsys):
    code, out, err = run(["bench", "--models", "tiny-mlp,tiny-cnn", "--modes", "train,eval", "--batch-sizes", "1",
                          "--batch-sizes", "3", "--out", str(tmp_path), "--json", "--no-artifacts"], capsys)
    assert code == 0, err
    results = json.loads(out)["results"]
    combos = {(r["model"], r["mode"], r["batch_size"]) for r in results}
    assert combos == {(m, mode, b) for m in ("tiny-mlp", "tiny-cnn") for mode in ("train", "eval") for b in (1, 3)}
    assert "[8/8 tiny-cnn eval b3]" in err
    by = {(r["model"], r["mode"], r["batch_size"]): r for r in results}
    # More samples, more memory; training needs more than evaluation.
    assert by["tiny-cnn", "train", 3]["eager_peak_bytes"] > by["tiny-cnn", "train", 1]["eager_peak_bytes"]
    assert by["tiny-cnn", "train", 3]["eager_peak_bytes"] > by["tiny-cnn", "eval", 3]["eager_peak_bytes"]
    table = (tmp_path / "results_table.md").read_text()
    assert table.count("| tiny-") == 8 and "| **average** | train | all: 4 runs |" in table and "| **average** | train | batch 3: 2 runs |" in table


def test_suite_subset_writes_a_table(tmp_path, capsys):
    code, out, err = run(["bench", "suite", "--models", "tiny-mlp", "--batch-sizes", "2", "--out", str(tmp_path),
                          "--quiet"], capsys)
    assert code == 0, err
    table = (tmp_path / "results_table.md").read_text()
    assert "| tiny-mlp | train | 2 |" in table and "| tiny-mlp | eval | 2 |" in table
    assert "reports written to" in out


def test_capture_command(tmp_path, capsys):
    path = tmp_path / "g.json"
    code, out, err = run(["capture", "--model", "tiny-mlp", "--mode", "train", "--batch-size", "2", "-o", str(path),
                          "--quiet"], capsys)
    assert code == 0, err
    g = load_graph(path)
    assert f"{len(g.ops)} ops" in out and any(b.persistent for b in g.buffers)
    # ...and bench takes the captured file.
    code, out, err = run(["bench", "--graph", str(path), "--out", str(tmp_path / "b"), "--json", "--quiet"], capsys)
    assert code == 0, err
    f = json.loads(out)
    assert f["eager_peak_bytes"] == simulate(g).peak_bytes
    assert (f["model"], f["mode"], f["batch_size"], f["optimizer"]) == ("tiny-mlp", "train", 2, "sgd")
    assert (tmp_path / "b" / "tiny-mlp-train-b2" / "plan.json").exists()


def test_capture_recomputable_gives_schedule_budget_the_graph_bench_budget_plans(tmp_path, capsys):
    # capture wrote the plain step only: schedule --budget on it could not recompute
    # in-place activations, and its bound was above bench --budget's for the same model
    pytest.importorskip("transformers")
    bounds, rng_states = {}, 0
    for flag in ([], ["--recomputable"]):
        path = tmp_path / f"g{len(flag)}.json"
        code, out, err = run(["capture", "--model", "bert-tiny", "--batch-size", "2", "--device", "cpu", "-o",
                              str(path), "--quiet", *flag], capsys)
        assert code == 0, err
        g = load_graph(path)
        assert g.meta.get("functional_inplace", False) is bool(flag)
        assert any(op.target == "aten.ne.Scalar" for op in g.ops) is bool(flag)  # dropout's kept masks
        # and what a budget bounds: the generator states kept to replay dropout (persistent)
        rng_states = sum(b.size for b in g.buffers if b.id == "rng_states")
        assert bool(rng_states) is bool(flag)
        code, out, err = run(["schedule", str(path), "--budget", "1", "--json", "--quiet", "--time-limit", "1"],
                             capsys)
        assert code == 1, err
        bounds[bool(flag)] = json.loads(out)["lower_bound_bytes"] - rng_states
    assert bounds[True] < bounds[False]  # bert-tiny b2: 610816 vs 639488 B (rng states left out)


def test_an_infinite_time_limit_is_written_as_standard_json(tmp_path, capsys):
    """``--time-limit inf`` is accepted; the figures, printed and in results.json, said
    ``Infinity``, which is not JSON (other parsers reject the file)."""
    from model_ir import save_graph
    from model_ir.testing.examples import training_chain

    path = tmp_path / "g.json"
    save_graph(training_chain(3), path)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))

    code, out, err = run(["bench", "--graph", str(path), "--out", str(tmp_path / "b"), "--json", "--quiet",
                          "--no-artifacts", "--time-limit", "inf"], capsys)
    assert code == 0, err
    assert strict(out)["time_limit"] == "inf"
    assert strict((tmp_path / "b" / "results.json").read_text())["results"][0]["time_limit"] == "inf"


def test_a_graph_captured_for_eval_is_reported_as_eval(tmp_path, capsys):
    """A graph from model_ir.torch.capture(train=False) has no bench mode: it is an eval
    step (no optimizer-in-backward line); null labels fall back to the graph's name."""
    import attrs
    import torch

    from model_ir import save_graph
    from model_ir.testing.torch_models import mlp
    from model_ir.torch import capture

    graph = capture(mlp(4, 2), torch.randn(2, 4), train=False)
    assert "mode" not in graph.meta and graph.meta["train"] is False
    path = tmp_path / "g.json"
    save_graph(attrs.evolve(graph, name="net", meta={**graph.meta, "model": None, "mode": None}), path)
    code, out, err = run(["bench", "--graph", str(path), "--out", str(tmp_path / "b"), "--quiet"], capsys)
    assert code == 0, err
    assert "net eval batch 0" in out and "optimizer in backward" not in out
    assert (tmp_path / "b" / "net-eval-b0").is_dir()


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--model", "nope"], "unknown model 'nope'; available: alexnet"),
    (["bench", "--model", "tiny-mlp", "--mode", "fit"], "unknown mode 'fit'; available: train, eval"),
    (["bench", "--model", "tiny-mlp", "--batch-size", "0"], "batch size must be a positive integer, got 0"),
    (["bench", "--model", "tiny-mlp", "--batch-size", "x"], "batch size must be a positive integer, got 'x'"),
    (["bench", "--model", "tiny-mlp", "--optimizer", "lamb"], "unknown optimizer 'lamb'; available: sgd"),
    (["bench", "--models", "tiny-mlp,nope"], "unknown model 'nope'"),
    (["bench"], "name a model with --model NAME"),
    (["bench", "--model", "tiny-mlp", "--scheduler", "magic", "--quiet"], "unknown scheduler 'magic'"),
    (["bench", "--model", "tiny-mlp", "--placer", "magic", "--quiet"], "unknown placer 'magic'"),
    (["bench", "max-batch", "--model", "tiny-mlp", "--memory", "lots"], "--memory: cannot read memory size 'lots'"),
    (["bench", "--model", "tiny-mlp", "--budget", "0"], "--budget: memory size must be positive, got '0'"),
    (["bench", "--model", "tiny-mlp", "--batch-sizes", "1,,2"], "an empty value in the list '1,,2'"),
    # bench's own options before a subcommand: refused (before: ignored, or replaced by the subcommand's defaults)
    (["bench", "--out", "mine", "suite", "--models", "tiny-mlp"],
     "bench: --out is given before 'suite', where it does nothing: the options of 'suite' go after it"),
    (["bench", "--model", "tiny-mlp", "suite"], "--model is given before 'suite'"),
    (["bench", "--graph", "g.json", "max-batch", "--model", "tiny-mlp", "--memory", "1MiB"],
     "--graph is given before 'max-batch'"),
    (["bench", "--scheduler", "bogus", "max-batch", "--model", "tiny-mlp", "--memory", "1MiB"],
     "--scheduler is given before 'max-batch'"),
    (["capture", "--model", "nope", "-o", "x.json"], "unknown model 'nope'"),
    (["capture", "--model", "tiny-mlp", "--mode", "eval", "--optimizer", "adam", "-o", "x.json"],
     "--optimizer adam: an eval step runs no optimizer"),
    # as capture and run (before: accepted, the optimizer silently ignored); a sweep with train steps takes it
    (["bench", "--model", "tiny-mlp", "--mode", "eval", "--optimizer", "adam"],
     "--optimizer adam: an eval step runs no optimizer"),
    (["bench", "suite", "--modes", "eval", "--optimizer", "adam"], "--optimizer adam: an eval step runs no optimizer"),
    (["bench", "max-batch", "--model", "tiny-mlp", "--mode", "eval", "--optimizer", "adam", "--memory", "1GiB"],
     "--optimizer adam: an eval step runs no optimizer"),
    (["schedule", "g.json", "-o", "plan.csv"], "-o plan.csv: schedule writes a model-plan/1 JSON; name the output "
     "plan.json"),
    # Beyond 64-bit sizes: refused before any import; a batch whose sizes overflow when built.
    (["capture", "--model", "tiny-mlp", "--batch-size=99999999999999999999", "--device", "cpu", "-o", "x.json"],
     "batch size 99999999999999999999 is too large"),
    (["capture", "--model", "tiny-mlp", "--batch-size=4611686018427387904", "--device", "cpu", "-o", "x.json",
      "--quiet"],
     "batch size 4611686018427387904 is too large for tiny-mlp"),
    (["bench", "--model", "tiny-mlp", "--batch-size=9223372036854775807", "--quiet"],
     "batch size 9223372036854775807 is too large for tiny-mlp"),
])
def test_user_mistakes_are_one_line_errors(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("model-opt: error: ") and needle in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_out_must_be_a_directory_checked_before_any_run(tmp_path, capsys, monkeypatch):
    import model_bench.sweep as sweep

    def no_run(*args, **kwargs):
        raise AssertionError("ran a model before checking --out")

    monkeypatch.setattr(sweep, "run_bench", no_run)
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "results"
    file.write_text("kept")
    graph = tmp_path / "g.json"
    graph.write_text("{}")
    for argv, needle in [
        (["bench", "suite", "--models", "tiny-mlp", "--batch-sizes", "1", "--out", str(file)],
         f"--out {file}: is not a directory"),
        (["bench", "--model", "tiny-mlp", "--out", str(file)], f"--out {file}: is not a directory"),
        (["bench", "--model", "tiny-mlp", "--out", str(file / "sub")],
         f"--out {file / 'sub'}: {file} is not a directory"),
        (["bench", "--graph", str(graph), "--out", str(file)], f"--out {file}: is not a directory"),
        (["bench", "--model", "tiny-mlp", "--out", ""], "--out: the path is empty"),
        (["bench", "suite", "--models", "tiny-mlp", "--out", ""], "--out: the path is empty"),
    ]:
        code, out, err = run([*argv, "--quiet"], capsys)
        assert code == 2 and out == "", (argv, out)
        assert err.startswith("model-opt: error: ") and needle in err and err.count("\n") == 1, err
    assert file.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "results"]


def test_options_a_graph_file_or_an_empty_list_would_ignore_are_refused(tmp_path, capsys, monkeypatch):
    """bench --graph refuses --optimizer, --device and --autocast as it does --mode and --batch-size
    (the graph was captured with its own); an empty list is not the default list."""
    import model_bench.sweep as sweep

    monkeypatch.setattr(sweep, "run_bench", lambda *a, **k: pytest.fail("ran a model"))
    monkeypatch.chdir(tmp_path)
    graph = tmp_path / "t.json"
    graph.write_text("{}")
    capture_flags = "--optimizer, --device and --autocast say how to capture"
    for argv, needle in [
        (["bench", "--graph", str(graph), "--optimizer", "adam"], capture_flags),
        (["bench", "--graph", str(graph), "--device", "cuda"], capture_flags),
        (["bench", "--graph", str(graph), "--device", "cpu"], capture_flags),
        (["bench", "--graph", str(graph), "--autocast", "bf16"], capture_flags),
        (["bench", "--model", "tiny-mlp", "--batch-sizes", ","], "--batch-sizes: the list is empty"),
        (["bench", "--model", "tiny-mlp", "--modes", ","], "--modes: the list is empty"),
        (["bench", "suite", "--models", "tiny-mlp", "--batch-sizes", ","], "--batch-sizes: the list is empty"),
        (["bench", "suite", "--models", "tiny-mlp", "--modes", ""], "--modes: the list is empty"),
        (["bench", "suite", "--models", ","], "--models: the list is empty"),
    ]:
        code, out, err = run([*argv, "--quiet"], capsys)
        assert code == 2 and out == "", (argv, out)
        assert err.startswith("model-opt: error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "bench-out").exists()


def test_list_models(capsys):
    code, out, _ = run(["bench", "--list", "--json"], capsys)
    assert code == 0
    listing = json.loads(out)
    assert listing["alexnet"]["suite"] and not listing["tiny-mlp"]["suite"]


def test_max_batch_simulated(capsys):
    code, out, err = run(["bench", "max-batch", "--model", "tiny-cnn", "--memory", "3MiB", "--limit", "64",
                          "--measure", "never", "--json", "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["memory_bytes"] == 3 * 2**20 and r["eager_source"].startswith("simulated")
    probes = {p["batch_size"]: p for p in r["probes"]}
    eb, ob = r["eager_max_batch_size"], r["optimized_max_batch_size"]
    assert 0 < eb <= ob <= 64
    assert probes[eb]["eager_bytes"] <= 3 * 2**20
    if eb < 64:  # the next batch size was probed and did not fit
        assert probes[eb + 1]["eager_bytes"] > 3 * 2**20
    assert probes[ob]["optimized_bytes"] <= 3 * 2**20
    sb = r["strongest_baseline_max_batch_size"]
    assert eb <= sb <= 64 and probes[sb]["strongest_bytes"] <= 3 * 2**20
    assert all(p["strongest_bytes"] <= p["eager_bytes"] for p in r["probes"] if "eager_bytes" in p)
    # The CPU has no caching allocator: eager holds its live peak (it was sized as CUDA's
    # 2 MiB segments), as bench reports it.
    assert "live peak" in r["eager_source"] and "live peak" in r["strongest_baseline_source"]
    settings = BenchSettings(device="cpu", time_limit=2)
    assert probes[eb]["eager_bytes"] == run_bench("tiny-cnn", "train", eb, settings).figures["eager_peak_bytes"]
    # optimized is what optimize() holds (its executor, what lies beside the arena); the
    # plan (every buffer in the arena) is searched on its own
    assert r["optimized_source"].startswith("simulated (what optimize() holds")
    assert probes[ob]["optimized_executor"] == "reorder"  # the CPU: no arena holds less than the live peak
    pb = r["plan_max_batch_size"]
    assert 0 < pb <= 64 and probes[pb]["plan_bytes"] <= 3 * 2**20
    if pb < 64:
        assert probes[pb + 1]["plan_bytes"] is None or probes[pb + 1]["plan_bytes"] > 3 * 2**20


def test_bench_never_overwrites_its_input_graph(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "tiny-mlp-train-b2"
    run_dir.mkdir()
    path = run_dir / "graph.json"
    assert run(["capture", "--model", "tiny-mlp", "--batch-size", "2", "-o", str(path), "--quiet"], capsys)[0] == 0
    before = path.read_bytes()
    import model_bench.pipeline as pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("analysed before refusing (before: 65 s of scheduling, then refused)")

    monkeypatch.setattr(pipeline, "analyze_graph", no_work)
    code, _, err = run(["bench", "--graph", str(path), "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and "would overwrite the input graph" in err
    assert path.read_bytes() == before
    # Nor with a report's name (only graph.json was checked: results.json was replaced).
    named = tmp_path / "results.json"
    named.write_bytes(before)
    for extra in ([], ["--no-artifacts"]):
        code, _, err = run(["bench", "--graph", str(named), "--out", str(tmp_path), "--quiet", *extra], capsys)
        assert code == 2 and "would overwrite the input graph" in err
        assert named.read_bytes() == before


def test_max_batch_text_names_each_gain_in_one_parenthesis(monkeypatch, capsys):
    """Where eager fits no batch (gain None) the line read "largest batch 16, 1.00x the
    strongest baseline)", with no opening parenthesis."""
    from model_bench import max_batch

    result = {"model": "m", "mode": "train", "memory_bytes": 1, "limit": 16, "eager_source": "e",
              "strongest_baseline_source": "s", "optimized_source": "o", "eager_max_batch_size": 0,
              "strongest_baseline_max_batch_size": 16, "optimized_max_batch_size": 16, "gain": None,
              "gain_vs_strongest": 1.0, "plan_max_batch_size": None}
    monkeypatch.setattr(max_batch, "max_batch", lambda *a, **k: result)
    code, out, err = run(["bench", "max-batch", "--model", "tiny-mlp", "--memory", "1MiB", "--measure", "never",
                          "--quiet"], capsys)
    assert code == 0, err
    assert "largest batch 16 (1.00x the strongest baseline)" in out
    result.update(eager_max_batch_size=8, gain=2.0, gain_vs_strongest=None)
    code, out, err = run(["bench", "max-batch", "--model", "tiny-mlp", "--memory", "1MiB", "--measure", "never",
                          "--quiet"], capsys)
    assert "largest batch 16 (2.00x eager)" in out


def test_sweep_lists_take_ascii_digits_and_name_each_run_once(tmp_path, capsys):
    """As the README says and run's --batch-size does: int() alone read "1_0" as 10 and
    the digits of other scripts ("\u0663" as 3)."""
    for value in ("1_0", "\u0663,2"):
        code, _, err = run(["bench", "--model", "tiny-mlp", "--batch-sizes", value, "--out", str(tmp_path),
                            "--quiet", "--no-artifacts"], capsys)
        assert code == 2 and "batch size must be a positive integer" in err and err.count("\n") == 1
    # nor one run twice (it wrote the same run twice into the results)
    for argv, needle in ((["--model", "tiny-mlp", "--batch-sizes", "2,02"], "--batch-sizes: 2 is named twice"),
                         (["--models", "tiny-mlp,tiny-mlp"], "--models: 'tiny-mlp' is named twice"),
                         (["--model", "tiny-mlp", "--modes", "train,train"], "--modes: 'train' is named twice")):
        code, _, err = run(["bench", *argv, "--out", str(tmp_path), "--quiet", "--no-artifacts"], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err


def test_ctrl_c_in_a_solver_stops_the_sweep_with_its_reports(tmp_path, capsys, monkeypatch):
    """The scheduler turns Ctrl-C into its best order so far (schedule_interrupted): the
    sweep writes the reports of the runs so far and stops, as interrupted (before: it went
    on solving the runtime figures, then the next model, and exited 1 without a word)."""
    import attrs

    import model_sched

    real = model_sched.schedule
    monkeypatch.setattr(model_sched, "schedule", lambda *a, **k: attrs.evolve(real(*a, **k), interrupted=True))
    code, _, err = run(["bench", "--models", "tiny-mlp,tiny-cnn", "--batch-size", "2", "--device", "cpu",
                        "--time-limit", "1", "--out", str(tmp_path), "--quiet", "--no-artifacts"], capsys)
    assert code == 130 and "interrupted" in err
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["model"] for r in results] == ["tiny-mlp"] and results[0]["schedule_interrupted"]


def test_list_with_a_model_is_refused(capsys):
    """``bench --list --model X`` listed every model and ran none, silently."""
    code, _, err = run(["bench", "--list", "--model", "tiny-mlp"], capsys)
    assert code == 2 and "--list lists every zoo model and runs none" in err and err.count("\n") == 1
