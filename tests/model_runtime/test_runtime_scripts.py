"""The benchmark and GPU-check scripts run (tiny settings) and the GPU check skips
cleanly without CUDA."""

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


def test_gpu_check_skips_without_cuda(monkeypatch, capsys):
    gpu_check = _load("scripts/gpu_check.py")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA GPU available" in capsys.readouterr().out


def test_gpu_check_dry_run_on_cpu(monkeypatch, capsys):
    gpu_check = _load("scripts/gpu_check.py")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(gpu_check.MODELS, "mlp", (lambda: gpu_check.mlp(16, 2), gpu_check.MODELS["mlp"][1], (4, 16), None))
    assert gpu_check.main(["--allow-cpu", "--models", "mlp", "--steps", "1", "--warmup", "1", "--time-limit", "0.2",
                           "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == ["eager", "reorder", "arena"]
    assert all(r["max_param_diff_vs_eager"] == 0.0 for r in rows)  # CPU: bitwise
    assert rows[2]["arena_bytes"] > 0


def test_step_time_benchmark_prints_ratios(monkeypatch, capsys):
    bench = _load("benchmarks/step_time.py")
    monkeypatch.setitem(bench.MODELS, "mlp", (lambda: bench.mlp(16, 2), bench.MODELS["mlp"][1],
                                              lambda: torch.randn(4, 16), None))
    assert bench.main(["--models", "mlp", "--rounds", "3", "--warmup", "1", "--time-limit", "0.2", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(row["ratio_to_eager"]) == {"eager", "reorder", "arena"} and row["ratio_to_eager"]["eager"] == 1.0
    assert all(v > 0 for v in row["median_seconds"].values())
