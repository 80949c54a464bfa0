"""Every command that reads a graph goes through the frontend hook, and a failing
third-party provider is one line naming the plugin with its own exit status (4).

The frontend and scheduler come from examples/model-opt-example-plugin, registered
through its entry point (``example_plugin``); other plugins are fake distributions.
"""

import json

import pytest

from model_ir.cli import main

CHAIN = """# a diamond: b and c both read a
a 100
b 400 a
c 300 a
d 10 b c
"""


@pytest.fixture
def chain_file(tmp_path):
    path = tmp_path / "diamond.chain"
    path.write_text(CHAIN)
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_reads_a_third_party_format_by_its_suffix(example_plugin, chain_file, capsys):
    code, out, err = run(["info", chain_file, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert (info["name"], info["ops"], info["buffers"]) == ("diamond", 4, 4)
    # a, b and c alive while c runs (a is freed after its last reader): 800 bytes
    assert info["peak_bytes"] == 800


def test_frontend_option_overrides_the_suffix(example_plugin, chain_file, tmp_path, capsys):
    other = tmp_path / "diamond.txt"
    other.write_text(CHAIN)
    code, out, _ = run(["info", other, "--frontend", "chain", "--json"], capsys)
    assert code == 0 and json.loads(out)["ops"] == 4
    code, _, err = run(["info", chain_file, "--frontend", "json"], capsys)
    assert code == 2 and err.startswith("model-opt: error: ") and len(err.splitlines()) == 1
    code, _, err = run(["info", chain_file, "--frontend", "onnx"], capsys)
    assert code == 2 and "unknown frontend 'onnx'; available: chain, json, torch" in err


def test_schedule_place_and_bench_read_a_third_party_format(example_plugin, chain_file, tmp_path, capsys):
    code, out, err = run(["schedule", chain_file, "--method", "example-lifo", "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["peak_bytes"] == 800
    code, out, err = run(["place", chain_file, "--schedule", "example-lifo", "-o", tmp_path / "plan.json",
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["buffers"] == 4 and (tmp_path / "plan.json").exists()
    code, out, err = run(["bench", "--graph", chain_file, "--no-artifacts", "--out", tmp_path / "bench",
                          "--json", "--quiet", "--time-limit", "5"], capsys)
    assert code == 0, err
    assert json.loads(out)["ops"] == 4


def test_help_lists_plugin_schedulers_and_frontends(example_plugin, capsys):
    for argv, wanted in [(["schedule", "--help"], "example-lifo"), (["info", "--help"], "chain, json")]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0 and wanted in " ".join(capsys.readouterr().out.split())


def test_place_still_reads_minimalloc_csv_and_json(example_plugin, diamond_json_file, tmp_path, capsys):
    csv = tmp_path / "lifetimes.csv"
    csv.write_text("id,lower,upper,size\na,0,2,8\nb,1,3,8\n")
    code, out, err = run(["place", csv, "-o", tmp_path / "out.csv", "--json"], capsys)
    assert code == 0 and json.loads(out)["arena_bytes"] == 16, err
    code, out, err = run(["place", diamond_json_file, "-o", tmp_path / "plan.json", "--json"], capsys)
    assert code == 0, err


@pytest.fixture
def diamond_json_file(tmp_path):
    from model_ir.testing.examples import diamond_json

    path = tmp_path / "diamond.json"
    path.write_text(json.dumps(diamond_json()))
    return path


FAILING = '''
from model_ir.hookspecs import hookimpl

class Crash:
    name = "crash"
    help = "raises"
    def run(self, problem, control, solver=None):
        raise ZeroDivisionError("division by zero")

class Liar:
    name = "liar"
    help = "offers an order that runs ops backwards"
    def run(self, problem, control, solver=None):
        control.offer(list(reversed(range(problem.lv.n_ops))), self.name)

class CrashPlacer:
    name = "crash-placer"
    help = "raises"
    def place(self, lifetimes, *, capacity=None, time_limit=None):
        raise ValueError("no room")

class DictFrontend:
    name = "dict"
    suffixes = (".dict",)
    def load(self, source, **options):
        return {"ops": []}

class BrokenCommand:
    name = "broken"
    help = "its arguments cannot be added"
    def add_arguments(self, parser):
        raise KeyError("oops")
    def run(self, args):
        return 0

@hookimpl
def model_opt_schedulers():
    return [Crash(), Liar()]

@hookimpl
def model_opt_placers():
    return [CrashPlacer()]

@hookimpl
def model_opt_frontends():
    return [DictFrontend()]

@hookimpl
def model_opt_cli_commands():
    return [BrokenCommand()]
'''


@pytest.mark.parametrize("argv, message", [
    (["schedule", "{graph}", "--method", "crash"], "ZeroDivisionError: division by zero"),
    (["schedule", "{graph}", "--method", "liar"],
     "scheduler 'liar' gave an invalid answer: schedule runs op 'B' before op 'A', which it depends on"),
    # exit 1 would mean "capacity proven infeasible" to a script
    (["place", "{graph}", "--method", "crash-placer", "--capacity", "1", "-o", "{tmp}/p.json"],
     "ValueError: no room"),
    (["info", "{tmp}/g.dict"], "frontend 'dict' gave an invalid answer: it returned a dict, not a model_ir.Graph"),
], ids=["scheduler-raises", "scheduler-invalid-order", "placer-raises", "frontend-no-graph"])
def test_a_failing_plugin_exits_4_naming_it(install_plugin, diamond_json_file, tmp_path, capsys, argv, message):
    install_plugin("failing-dist", {"failing": "failing_plugin"}, {"failing_plugin": FAILING})
    (tmp_path / "g.dict").write_text("{}")
    code, _, err = run([a.format(graph=diamond_json_file, tmp=tmp_path) for a in argv], capsys)
    assert code == 4
    assert err.splitlines()[-1] == f"model-opt: error: plugin failing (failing-dist 0.1.0) failed: {message}"


def test_a_command_that_cannot_add_its_arguments_breaks_only_itself(install_plugin, diamond_json_file, capsys):
    install_plugin("failing-dist", {"failing": "failing_plugin"}, {"failing_plugin": FAILING})
    code, out, err = run(["info", diamond_json_file], capsys)
    assert code == 0 and "diamond" in out
    assert "model-opt: warning: command broken: plugin failing (failing-dist 0.1.0) failed: KeyError: 'oops'" in err
    code, _, err = run(["broken"], capsys)
    assert code == 4 and err.splitlines()[-1].startswith("model-opt: error: plugin failing (failing-dist 0.1.0)")
