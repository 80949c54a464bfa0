"""`model-opt info` and the CLI's handling of user mistakes."""

import json
import subprocess
import sys

from model_ir.cli import main



def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(diamond_file, capsys):
    p = diamond_file
    code, out, err = run(["info", str(p), "--json"], capsys)
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["ops"] == 2 and info["buffers"] == 3
    assert info["peak_bytes"] == 137 and info["persistent_bytes"] == 123
    assert info["working_set_bound_bytes"] == 137


def test_info_text(diamond_file, capsys):
    p = diamond_file
    code, out, _ = run(["info", str(p)], capsys)
    assert code == 0
    assert "2 ops, 3 buffers" in out and "137 B" in out


def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "model-ir/1", "buffers": [{"id": "a", "size": -1}], "ops": []}')
    for argv, needle in [
        (["info", str(tmp_path / "missing.json")], "no such file"),
        (["info", str(bad)], "buffers[0].size: must be >= 0"),
    ]:
        code, out, err = run(argv, capsys)
        assert code == 2
        assert needle in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "model_ir.cli", "info", str(tmp_path / "x.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("model-opt: error:") and "Traceback" not in proc.stderr


def test_no_subcommand_prints_help_and_fails(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "info" in err


def test_unwritable_output_is_one_line(tmp_path, capsys):
    from model_ir import FormatError, save_graph
    from model_ir.testing.examples import diamond_json
    from model_ir.json_format import graph_from_dict

    import pytest

    target = tmp_path / "no-such-dir" / "g.json"
    with pytest.raises(FormatError, match="no-such-dir/g.json: cannot write"):
        save_graph(graph_from_dict(diamond_json()), target)
    assert not target.parent.exists()


def test_os_errors_from_a_command_are_one_line(capsys, monkeypatch):
    from model_ir import cli_info

    def boom(path, frontend=None):
        raise PermissionError(13, "Permission denied", "/root/secret.json")

    monkeypatch.setattr(cli_info, "load_file", boom)
    code, _, err = run(["info", "x.json"], capsys)
    assert code == 2
    assert err == "model-opt: error: /root/secret.json: Permission denied\n"


def test_closed_stdout_exits_quietly(diamond_file):
    # `model-opt info --json | head -c 0`: the reader is gone before anything is written.
    # Not a user mistake: no message on stderr, the status a shell gives for SIGPIPE.
    proc = subprocess.Popen([sys.executable, "-m", "model_ir.cli", "info", str(diamond_file), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert err == b""


def test_info_gives_the_eager_peak_that_bench_and_schedule_report(tmp_path, capsys):
    """A buffer eager PyTorch frees later than its last use (Python holds it: released_after):
    info's eager peak counts it as bench's and schedule's eager peak do (it printed only the
    peak freeing at last use, and a user compared it with bench's)."""
    from model_ir import Buffer, Graph, Op, save_graph

    g = Graph(buffers=(Buffer("a", 100, meta={"released_after": "C"}), Buffer("b", 10), Buffer("c", 50, output=True)),
              ops=(Op("A", (), ("a",)), Op("B", ("a",), ("b",)), Op("C", ("b",), ("c",))), name="held")
    path = tmp_path / "held.json"
    save_graph(g, path)
    code, out, _ = run(["info", str(path), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["peak_bytes"] == 110 and info["eager_peak_bytes"] == 160
    code, out, _ = run(["info", str(path)], capsys)
    assert "eager peak:            160 B" in out
