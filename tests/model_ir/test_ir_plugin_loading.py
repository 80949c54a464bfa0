"""A broken third-party plugin is reported in one line and skipped; built-ins win name
clashes; MODEL_OPT_DISABLE_PLUGIN_AUTOLOAD loads only model-opt's own layers.

Plugins are fake installed distributions (``install_plugin``), loaded through the
real ``model_opt`` entry-point code path.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from model_ir.frontends import load
from model_ir.plugins import DISABLE_AUTOLOAD, plugin_manager, providers

#: The commands each layer adds to model-opt.
LAYER_COMMANDS = {"model_ir": {"info"}, "model_sched": {"schedule"}, "model_place": {"place"},
                  "model_runtime": {"run"}, "model_bench": {"bench", "capture"}}

GOOD = '''
from model_ir.hookspecs import hookimpl

class Constant:
    name = "constant"
    def load(self, source, **options):
        from model_ir import Graph
        return Graph([], [], name="constant")

@hookimpl
def model_opt_frontends():
    return [Constant()]
'''


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("model-opt: warning:")]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def assert_layers_work():
    """Every installed layer's commands and algorithms came through."""
    commands = set().union(*(names for layer, names in LAYER_COMMANDS.items() if installed(layer)))
    assert commands <= set(providers("model_opt_cli_commands"))
    if installed("model_sched"):
        assert "auto" in providers("model_opt_schedulers")
    if installed("model_place"):
        assert "exact" in providers("model_opt_placers")


@pytest.mark.parametrize("module, entry, error", [
    (None, "no_such_module_xyz", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ("broken_import", "broken_import", "ImportError: needs libfoo"),
    ("wrong_arg", "wrong_arg", "Argument(s) {'config'} are declared in the hookimpl"),
    pytest.param("wrong_layer_arg", "wrong_layer_arg", "Argument(s) {'graph'} are declared in the hookimpl",
                 marks=pytest.mark.needs("model_sched")),
], ids=["missing-module", "import-error", "wrong-argument", "wrong-argument-layer-hook"])
def test_a_broken_plugin_is_one_line_and_skipped(install_plugin, capsys, module, entry, error):
    sources = {
        "broken_import": "raise ImportError('needs libfoo')\n",
        "wrong_arg": "from model_ir.hookspecs import hookimpl\n\n@hookimpl\n"
                     "def model_opt_frontends(config):\n    return []\n",
        "wrong_layer_arg": "from model_ir.hookspecs import hookimpl\n\n@hookimpl\n"
                           "def model_opt_schedulers(graph):\n    return []\n",
    }
    install_plugin("broken-dist", {"broken": entry}, {module: sources[module]} if module else None)
    install_plugin("good-dist", {"good": "good_plugin"}, {"good_plugin": GOOD})
    assert_layers_work()
    assert "constant" in providers("model_opt_frontends")  # the other plugins still load
    [line] = warnings(capsys.readouterr().err)
    assert line.startswith("model-opt: warning: plugin broken (broken-dist 0.1.0) is broken and was skipped: ")
    assert error in line and DISABLE_AUTOLOAD in line


def test_a_misspelt_hook_is_reported_and_the_plugin_skipped(install_plugin, capsys):
    install_plugin("typo-dist", {"typo": "typo_plugin"}, {"typo_plugin": GOOD + (
        "\n@hookimpl\ndef model_opt_scheduler():\n    return []\n")})
    assert "constant" not in providers("model_opt_frontends")
    assert_layers_work()
    [line] = warnings(capsys.readouterr().err)
    assert "plugin typo (typo-dist 0.1.0) is broken" in line and "unknown hook model_opt_scheduler " in line


@pytest.mark.parametrize("body, message", [
    ("return Constant()", "model_opt_frontends returned a Constant, not a list of providers"),
    ("return [Constant(), object()]", "model_opt_frontends returned a provider without a name"),
    ("raise RuntimeError('boom')", "model_opt_frontends failed and its providers are skipped: RuntimeError: boom"),
], ids=["not-a-list", "no-name", "raises"])
def test_a_bad_provider_list_is_reported_not_fatal(install_plugin, capsys, body, message):
    install_plugin("odd-dist", {"odd": "odd_plugin"}, {"odd_plugin": GOOD.replace("return [Constant()]", body)})
    found = providers("model_opt_frontends")
    assert "json" in found  # the built-ins still answer
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("model-opt: warning: plugin odd (odd-dist 0.1.0): ")
    assert message in lines[0]
    providers("model_opt_frontends")
    assert not warnings(capsys.readouterr().err), "reported once, not at every lookup"


CLASH = '''
from model_ir.hookspecs import hookimpl

class Impostor:
    help = "not the default"
    def __init__(self, name):
        self.name = name
    def run(self, *args, **kwargs):
        raise AssertionError("a plugin replaced a built-in")
    place = load = run

@hookimpl
def model_opt_schedulers():
    return [Impostor("auto")]

@hookimpl
def model_opt_placers():
    return [Impostor("auto"), Impostor("exact")]

@hookimpl
def model_opt_frontends():
    return [Impostor("json")]
'''


@pytest.mark.needs("model_sched", "model_place")
def test_built_ins_win_name_clashes(install_plugin, capsys, diamond_file):
    from model_place import place, placer_names
    from model_sched import schedule

    install_plugin("clash-dist", {"clash": "clash_plugin"}, {"clash_plugin": CLASH})
    assert load(diamond_file).name == "diamond"
    assert schedule(load(diamond_file), method="auto", time_limit=1).method == "auto"
    from model_ir import Lifetime

    assert place([Lifetime("a", 0, 1, 8)]).arena_bytes == 8
    assert placer_names().count("auto") == 1
    lines = warnings(capsys.readouterr().err)
    for hook, name in [("model_opt_frontends", "json"), ("model_opt_schedulers", "auto"),
                       ("model_opt_placers", "auto"), ("model_opt_placers", "exact")]:
        assert (f"model-opt: warning: plugin clash (clash-dist 0.1.0): {hook} provider {name!r} is ignored: "
                "model-opt already provides that name") in lines


def test_autoload_can_be_disabled(install_plugin, monkeypatch):
    install_plugin("good-dist", {"good": "good_plugin"}, {"good_plugin": GOOD})
    assert "constant" in providers("model_opt_frontends")
    monkeypatch.setenv(DISABLE_AUTOLOAD, "1")
    plugin_manager.cache_clear()
    assert "constant" not in providers("model_opt_frontends")
    assert_layers_work()  # the project's own layers come through the same entry-point group


def test_help_survives_a_broken_plugin(install_plugin, tmp_path):
    """The whole command line: ``--help`` exits 0 with one warning naming the distribution."""
    install_plugin("broken-dist", {"broken": "no_such_module_xyz"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    env.pop(DISABLE_AUTOLOAD, None)
    proc = subprocess.run([sys.executable, "-m", "model_ir.cli", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "info" in proc.stdout
    assert proc.stderr.splitlines() == [
        "model-opt: warning: plugin broken (broken-dist 0.1.0) is broken and was skipped: ModuleNotFoundError: "
        f"No module named 'no_such_module_xyz' (uninstall it, or set {DISABLE_AUTOLOAD}=1)"]
    env[DISABLE_AUTOLOAD] = "1"
    proc = subprocess.run([sys.executable, "-m", "model_ir.cli", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.needs("model_sched")
def test_an_entry_point_naming_a_built_in_module_leaves_it_registered(install_plugin, capsys):
    install_plugin("copycat-dist", {"copycat": "model_sched.plugins"})
    assert_layers_work()
    [line] = warnings(capsys.readouterr().err)
    assert line == ("model-opt: warning: plugin copycat (copycat-dist 0.1.0) is broken and was skipped: ValueError: "
                    "model_sched.plugins is already registered, as plugin model_sched (uninstall it, or set "
                    f"{DISABLE_AUTOLOAD}=1)")


@pytest.mark.parametrize("module_source, message", [
    ("import sys\nsys.exit('needs a license server')\n", "SystemExit: needs a license server"),
    ("import argparse\nargparse.ArgumentParser(prog='someplugin').parse_args(['--nope'])\n", "SystemExit: 2"),
], ids=["exits-at-import", "parses-argv-at-import"])
def test_a_plugin_exiting_at_import_is_skipped_not_fatal(install_plugin, capsys, module_source, message):
    """A plugin module calling sys.exit (or argparse on the command's own argv) at import
    ended every command, --help included, with its status."""
    install_plugin("exit-dist", {"exiter": "exit_plugin"}, {"exit_plugin": module_source})
    assert_layers_work()
    [line] = [w for w in warnings(capsys.readouterr().err) if "exiter" in w]
    assert "plugin exiter (exit-dist 0.1.0) is broken and was skipped" in line and message in line


NAMES = '''
from model_ir.hookspecs import hookimpl

class Odd:
    help = "cuts peak memory by 30% on transformers"
    def load(self, source, **options):
        raise AssertionError("not called")

class RaisingName(Odd):
    @property
    def name(self):
        raise RuntimeError("no name yet")

class Percent(Odd):
    name = "csv%"
    suffixes = 5  # not a string nor a list of them

class Exiting(Odd):
    name = "exiting"
    def load(self, source, **options):
        raise SystemExit(1)

@hookimpl
def model_opt_frontends():
    return [RaisingName(), Percent(), Exiting()]
'''


def test_odd_providers_leave_every_command_working(install_plugin, capsys, diamond_file, tmp_path):
    """A provider whose name raises, a name with '%' (argparse %-formats help texts), a
    frontend whose suffixes are not strings, and one that calls sys.exit: each broke
    every command (or, for the last, made it exit 1 with no message)."""
    from model_ir.cli import main
    from model_ir.errors import PluginFailedError
    from model_ir.frontends import frontend_for

    install_plugin("odd-dist", {"odd": "odd_plugin"}, {"odd_plugin": NAMES})
    found = providers("model_opt_frontends")
    assert "csv%" in found and "exiting" in found and "json" in found
    assert frontend_for(diamond_file) == "json"  # the malformed suffixes are ignored
    err = capsys.readouterr().err
    assert "whose name raised RuntimeError: no name yet; skipped" in err
    assert "frontend csv%: its suffixes are not a string or a list of them" in err
    assert main(["info", str(diamond_file)]) == 0
    with pytest.raises(SystemExit) as done:
        main(["info", "--help"])
    assert done.value.code == 0 and "csv%" in capsys.readouterr().out
    with pytest.raises(PluginFailedError, match="plugin odd .* failed: SystemExit: 1"):
        load(diamond_file, frontend="exiting")


def test_a_name_clash_between_plugins_goes_to_the_first_distribution_whatever_trylast_says(install_plugin, capsys):
    """docs/plugins.md: the first distribution in alphabetical order wins; a hookimpl
    marked trylast (or tryfirst) moved the other one ahead."""
    source = '''
from model_ir.hookspecs import hookimpl

class Frontend:
    name = "dup"
    def __init__(self, who):
        self.who = who

@hookimpl({marker})
def model_opt_frontends():
    return [Frontend({who!r})]
'''
    install_plugin("aaa-dist", {"aaa": "aaa_plugin"}, {"aaa_plugin": source.format(marker="", who="aaa")})
    install_plugin("zzz-dist", {"zzz": "zzz_plugin"},
                   {"zzz_plugin": source.format(marker="trylast=True", who="zzz")})
    assert providers("model_opt_frontends")["dup"].who == "aaa"
    assert "plugin zzz (zzz-dist 0.1.0): model_opt_frontends provider 'dup' is ignored" in capsys.readouterr().err


ANSWERS = '''
from model_ir.hookspecs import hookimpl

class Command:
    name = "weird"
    help = "returns no exit status"
    def add_arguments(self, parser):
        pass
    def run(self, args):
        return "ok"

class Bounder:
    name = "bounder"
    help = "a recomputing plan, and a bound of orders no order meets"
    def run(self, problem, control, solver=None):
        from model_ir.plan import order_indices
        from model_ir.recompute import recompute_flops
        from model_ir.simulator import simulate_indices
        g = problem.graph
        order = order_indices(g, ["f0", "f1", "b1", "f0", "b0", "update"])
        control.offer(order, self.name, simulate_indices(g, order).peak_bytes, recompute_flops(g, order))
        control.raise_order_bound(10 ** 12)

class Executor:
    name = "none-exec"
    needs_placement = False
    def build(self, captured, plan, **kwargs):
        return None

class Model:
    name = "tuple-model"
    description = "builds a tuple"
    def build(self, mode, batch_size, **kwargs):
        return (1, 2)

@hookimpl
def model_opt_cli_commands():
    return [Command()]

@hookimpl
def model_opt_schedulers():
    return [Bounder()]
'''

LAYERED = {"model_sched": "", "model_runtime": '''
@hookimpl
def model_opt_executors():
    return [Executor()]
''', "model_bench": '''
@hookimpl
def model_opt_models():
    return [Model()]
'''}


def test_a_plugin_s_answer_of_the_wrong_kind_names_the_plugin(install_plugin, capsys):
    """A command whose run() returns no int, a scheduler claiming a bound of orders above
    program order's peak, an executor whose build() returns None and a zoo model whose
    build() returns a tuple: each was a bare traceback (int('ok'), an AttributeError deep
    in the runtime) or, for the bound, printed as a fact; now exit 4 naming the plugin."""
    from model_ir.cli import main
    from model_ir.errors import PluginFailedError

    source = ANSWERS + "".join(extra for layer, extra in LAYERED.items() if installed(layer))
    install_plugin("answers-dist", {"answers": "answers_plugin"}, {"answers_plugin": source})
    assert main(["weird"]) == 4
    assert "command weird: run() returned str 'ok', not an exit status (int)" in capsys.readouterr().err
    if installed("model_sched"):
        from model_ir.testing.examples import training_chain
        from model_sched import schedule

        with pytest.raises(PluginFailedError, match=r"plugin answers .*scheduler 'bounder' gave an invalid answer: "
                                                    r"lower bound of orders 1000000000000 B exceeds"):
            schedule(training_chain(2), method="bounder", memory_budget=10 ** 6, time_limit=1)
    if installed("model_runtime"):
        import torch

        from model_runtime import optimize

        model = torch.nn.Linear(4, 2)
        with pytest.raises(PluginFailedError, match="executor 'none-exec' gave an invalid answer: build"):
            optimize(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     executor="none-exec", time_limit=1)
    if installed("model_bench"):
        from model_bench.zoo import build_case

        with pytest.raises(PluginFailedError, match="model 'tuple-model' gave an invalid answer: build"):
            build_case("tuple-model", "train", 1)
