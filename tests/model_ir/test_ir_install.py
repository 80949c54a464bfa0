"""model-ir installs and imports in a clean venv without torch."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_model_ir_installs_without_torch(tmp_path):
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(py), str(ROOT / "packages" / "model-ir")], check=True)
    code = ("import importlib.util, model_ir, model_ir.cli;"
            "assert importlib.util.find_spec('torch') is None, 'torch was installed';"
            "from model_ir.plugins import providers; assert 'info' in providers('model_opt_cli_commands')")
    subprocess.run([str(py), "-c", code], check=True)
    proc = subprocess.run([str(venv / "bin" / "model-opt"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "info" in proc.stdout
