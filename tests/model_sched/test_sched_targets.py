"""The issue's targets on random graphs (slow: run with ``uv run pytest -m slow``)."""

import sys
from pathlib import Path

import pytest

from model_ir.simulator import simulate
from model_sched import schedule

BENCH = Path(__file__).resolve().parents[2] / "packages" / "model-sched" / "benchmarks"


@pytest.fixture(scope="module")
def training_graphs():
    sys.path.insert(0, str(BENCH))
    try:
        import training_graphs
    finally:
        sys.path.remove(str(BENCH))
    return training_graphs


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_forty_op_random_graphs_are_proven_within_ten_seconds(training_graphs, seed):
    g = training_graphs.random_program(40, seed)
    r = schedule(g, time_limit=10)
    assert r.optimal and r.seconds < 10
    assert r.peak_bytes == simulate(g, r.order).peak_bytes


@pytest.mark.slow
@pytest.mark.parametrize("make", ["resnet_like", "transformer_like"])
def test_synthetic_training_steps_are_proven(training_graphs, make):
    g = getattr(training_graphs, make)(16)
    r = schedule(g, time_limit=60)
    assert r.optimal and r.peak_bytes <= min(r.candidates[k] for k in ("program", "lpmf", "bfs", "dfs"))
