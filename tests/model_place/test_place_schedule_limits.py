"""``model-opt place GRAPH --schedule auto``: the scheduler gets place's --time-limit,
and Ctrl-C during it places under its best order so far (issue 14, item 9)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("model_sched")

from model_ir.json_format import save_graph  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from model_ir.cli import main; sys.exit(main())"]


def _layered(n_ops: int, width: int = 8, seed: int = 0):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "model_sched"))
    try:
        from conftest import layered_graph  # the model-sched tests' graph builder
    finally:
        sys.path.pop(0)
    return layered_graph(n_ops, width=width, seed=seed)


@pytest.fixture(scope="module")
def big_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("place-sched") / "g300.json"
    save_graph(_layered(300), path)
    return str(path)


def test_schedule_auto_respects_place_time_limit(big_graph, tmp_path):
    t = time.perf_counter()
    proc = subprocess.run(CLI + ["place", big_graph, "-o", str(tmp_path / "p.json"), "--schedule", "auto",
                                 "--time-limit", "1", "--json"], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "feasible"
    assert wall < 1 + 1 + 8, wall  # scheduler and placer 1 s each, plus start-up


def test_sigint_during_schedule_places_best_order_so_far(big_graph, tmp_path):
    out_path = tmp_path / "p.json"
    proc = subprocess.Popen(CLI + ["place", big_graph, "-o", str(out_path), "--schedule", "auto", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    assert proc.poll() is None, proc.communicate()
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running 10 s after SIGINT")
    assert time.perf_counter() - t < 8
    assert proc.returncode == 0, err
    assert "interrupted" in err
    assert json.loads(out)["status"] == "feasible"
    assert out_path.exists()
