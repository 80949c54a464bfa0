"""Every `model-opt` call loads every installed layer's plugin: that must stay cheap."""

import subprocess
import sys

import pytest


def test_loading_all_plugins_imports_neither_torch_nor_matplotlib():
    code = ("import sys; from model_ir.plugins import plugin_manager, providers; plugin_manager(); "
            "names = set(providers('model_opt_cli_commands')); "
            "assert {'info', 'schedule', 'place', 'bench', 'capture', 'run'} <= names, names; "
            "heavy = [m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


#: What no command may import before it needs it (numpy and networkx come with
#: model-sched's bounds, torch with capture and the runtime, the rest with back ends).
HEAVY = ("networkx", "numpy", "torch", "scipy", "highspy", "ortools", "matplotlib", "transformers", "torchvision")


def _heavy_modules_after(argv: list[str], cwd) -> list[str]:
    code = ("import sys\n"
            "from model_ir.cli import main\n"
            "try:\n"
            f"    status = main({argv!r})\n"
            "except SystemExit as e:\n"
            "    status = e.code or 0\n"
            f"heavy = {set(HEAVY)!r}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy), file=sys.stderr)\n"
            "sys.exit(status)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return eval(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["place", "--help"], ["place", "small.csv", "-o", "out.csv"]],
                         ids=["help", "place-help", "place-csv"])
def test_light_commands_import_no_heavy_module(tmp_path, argv):
    (tmp_path / "small.csv").write_text("id,lower,upper,size\na,0,2,100\nb,1,3,200\nc,2,4,50\n")
    assert _heavy_modules_after(argv, tmp_path) == []
    if "out.csv" in argv:
        assert (tmp_path / "out.csv").read_text().startswith("id,lower,upper,size,offset")
