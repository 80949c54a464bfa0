"""Installing only the layers one needs (issue 14, items 4 and 5), with the README's
commands, into fresh virtual environments, offline from uv's cache:

- ``uv pip install --no-sources packages/model-ir packages/model-sched`` gives real
  (non-editable) installs that keep working when the checkout moves away; without
  ``--no-sources`` the workspace source made model-ir an editable link into it;
- model-place built without a C compiler installs, places with the heuristics and
  ``auto``, and ``--method exact`` is a one-line error."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def uv(*args, env=None) -> subprocess.CompletedProcess:
    exe = shutil.which("uv")
    if exe is None:
        pytest.skip("uv not on PATH")
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if "network was disabled" in proc.stderr or "Network connectivity is disabled" in proc.stderr:
        pytest.skip(f"uv cannot install offline: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    return proc


def venv(path: Path) -> Path:
    uv("venv", "-q", path)
    return path / "bin"


def test_model_sched_alone_is_a_real_install_that_survives_moving_the_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    for layer in ("model-ir", "model-sched"):
        shutil.copytree(ROOT / "packages" / layer, checkout / "packages" / layer,
                        ignore=shutil.ignore_patterns("__pycache__"))
    bin_ = venv(tmp_path / "venv")
    uv("pip", "install", "--offline", "-q", "--python", bin_ / "python", "--no-sources",
       checkout / "packages" / "model-ir", checkout / "packages" / "model-sched")
    checkout.rename(tmp_path / "moved")
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    assert not any(str(checkout) in p.read_text() for p in site.glob("*.pth")), "an editable link into the checkout"
    code = ("import importlib.util, model_ir, model_sched;"
            f"assert model_ir.__file__.startswith({str(site)!r}), model_ir.__file__;"
            "assert importlib.util.find_spec('model_place') is None")
    subprocess.run([bin_ / "python", "-c", code], check=True, cwd=tmp_path)
    proc = subprocess.run([bin_ / "model-opt", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and [line.split()[0] for line in proc.stdout.splitlines()] == [
        "model-ir", "model-sched"], proc.stdout


def test_model_place_built_without_a_compiler_places_with_heuristics(tmp_path):
    env = dict(os.environ, CC=str(tmp_path / "no-such-compiler"))
    env.pop("MODEL_PLACE_REQUIRE_SEARCH", None)
    uv("build", "--offline", "-q", "--wheel", "-o", tmp_path / "dist", ROOT / "packages" / "model-place", env=env)
    [wheel] = (tmp_path / "dist").glob("model_place-*.whl")
    bin_ = venv(tmp_path / "venv")
    uv("pip", "install", "--offline", "-q", "--python", bin_ / "python", "--no-sources",
       ROOT / "packages" / "model-ir", wheel)
    csv = tmp_path / "in.csv"
    csv.write_text("id,lower,upper,size\na,0,2,512\nb,1,3,512\n")
    env = {k: v for k, v in os.environ.items() if k != "MODEL_OPT_DISABLE_PLUGIN_AUTOLOAD"}

    def place(*argv):
        return subprocess.run([bin_ / "model-opt", "place", csv, *argv], capture_output=True, text=True,
                              cwd=tmp_path, env=env)

    proc = place("-o", tmp_path / "auto.csv")
    assert proc.returncode == 0 and proc.stdout.startswith("best-heuristic: 2 buffers"), proc.stderr
    assert proc.stderr.startswith("model-opt: warning: model-place's compiled search is not installed")
    proc = place("-o", tmp_path / "exact.csv", "--method", "exact")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("model-opt: error: placer 'exact' needs model-place's compiled search")
    assert place("-o", tmp_path / "best-fit.csv", "--method", "best-fit").returncode == 0
