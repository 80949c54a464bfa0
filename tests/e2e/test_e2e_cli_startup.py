"""Every `model-opt` call loads every installed layer's plugin: that must stay cheap."""

import subprocess
import sys


def test_loading_all_plugins_imports_neither_torch_nor_matplotlib():
    code = ("import sys; from model_ir.plugins import plugin_manager, providers; plugin_manager(); "
            "names = set(providers('model_opt_cli_commands')); "
            "assert {'info', 'schedule', 'place', 'bench', 'capture', 'run'} <= names, names; "
            "heavy = [m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
