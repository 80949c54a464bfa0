"""examples/model-opt-example-plugin, installed as a user would: one entry point, no
change to this repository. ``uv run --with`` builds it into an overlay environment,
offline from uv's cache, next to this working tree's model-ir and model-sched (its
dependencies, editable so that the overlay never holds a stale build of them)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def model_opt(*argv, env=None):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    with_ = ["--with-editable", "./packages/model-ir", "--with-editable", "./packages/model-sched",
             "--with", "./examples/model-opt-example-plugin"]
    proc = subprocess.run([uv, "run", "--offline", "--no-sync", "--quiet", *with_, "model-opt", *map(str, argv)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    if "network was disabled" in proc.stderr:
        # uv's cache lacks a build dependency; tests/e2e/test_e2e_plugin_commands.py still
        # runs the example through the same entry-point loading.
        pytest.skip(f"uv cannot build the example offline: {proc.stderr.strip().splitlines()[0]}")
    return proc


def test_the_installed_example_plugin_adds_a_scheduler_and_a_frontend(tmp_path):
    graph = tmp_path / "diamond.chain"
    graph.write_text("a 100\nb 400 a\nc 300 a\nd 10 b c\n")
    env = {k: v for k, v in os.environ.items() if k != "MODEL_OPT_DISABLE_PLUGIN_AUTOLOAD"}
    proc = model_opt("schedule", graph, "--method", "example-lifo", "--json", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["source"] == "example-lifo" and proc.stderr == ""
    proc = model_opt("schedule", "--help", env=env)
    assert proc.returncode == 0 and "example-lifo" in proc.stdout
    proc = model_opt("schedule", "--help", env={**env, "MODEL_OPT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert proc.returncode == 0 and "example-lifo" not in proc.stdout and "lpmf" in proc.stdout
