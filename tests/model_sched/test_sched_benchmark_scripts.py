"""model-sched's benchmark scripts run (tiny settings)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("model_bench")

BENCHMARKS = Path(__file__).resolve().parents[2] / "packages" / "model-sched" / "benchmarks"


def test_recompute_large_fits_a_budget_under_the_unbudgeted_peak(tmp_path, monkeypatch, capsys):
    out = tmp_path / "large.json"
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other, as files do
    monkeypatch.setattr(sys, "argv", ["recompute_large.py", "--cases", "opt-tiny:2:0.95", "--time-limit", "5",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCHMARKS / "recompute_large.py"), run_name="__main__")
    assert done.value.code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "opt-tiny" and row["batch_size"] == 2 and row["ops"] > 0
    transient = row["unbudgeted_peak_bytes"] - row["persistent_bytes"]
    assert row["budget_bytes"] == row["persistent_bytes"] + int(0.95 * transient)
    assert row["budget_bytes"] < row["unbudgeted_peak_bytes"]
    assert row["fits"] == (row["peak_bytes"] <= row["budget_bytes"])
    assert row["peak_bytes"] <= row["unbudgeted_peak_bytes"]
    assert "| opt-tiny | 2 |" in capsys.readouterr().out
