"""``model-opt place``: CSV round trip, exit statuses, bad input, JSON graphs and plans."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from hypothesis import given, settings
from model_ir import Buffer, Graph, Op, Plan, load_plan, program_order, save_graph, save_plan, simulate
from model_ir.errors import ModelOptError

from model_place import parse_lifetimes_csv, read_lifetimes_csv, validate_placement
from model_place.cli_place import PlaceCommand
from model_place.csv_format import format_placement_csv
from model_place.testing import lifetime_sets

# A 4-buffer instance whose optimum (12 bytes) has zero fragmentation.
CSV = "id,lower,upper,size\n0,0,3,4\n1,0,1,8\n2,1,3,8\n3,3,5,12\n"


def run(argv, capsys=None):
    """Run the place command as ``model-opt`` would (exit status, errors on stderr)."""
    cmd = PlaceCommand()
    parser = argparse.ArgumentParser(prog="model-opt place")
    cmd.add_arguments(parser)
    try:
        return cmd.run(parser.parse_args([str(a) for a in argv]))
    except ModelOptError as e:
        print(f"model-opt: error: {e}")
        return e.exit_code


def test_place_command_is_registered():
    from model_ir.plugins import plugin_manager

    # Only this layer's plugin: other layers' commands are not under test here.
    plugin = plugin_manager().get_plugin("model_place")
    assert plugin is not None, "model_place entry point not installed (run uv sync)"
    assert [c.name for c in plugin.model_opt_cli_commands()] == ["place"]


@settings(max_examples=40, deadline=None)
@given(lifetime_sets(min_size=1, max_size=8, alignments=(1, 4)))
def test_csv_round_trip(lts):
    offsets = {lt.id: 4 * i for i, lt in enumerate(lts)}
    text = format_placement_csv(lts, offsets)
    assert parse_lifetimes_csv(text) == lts
    assert text.splitlines()[0].endswith(",offset")


def test_csv_in_csv_out(tmp_path, capsys):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    assert run([src, "-o", out, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "optimal" and summary["arena_bytes"] == 12
    lines = out.read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset"
    lts = read_lifetimes_csv(out)  # the offset column is ignored on input
    assert lts == read_lifetimes_csv(src)
    offsets = {line.split(",")[0]: int(line.split(",")[-1]) for line in lines[1:]}
    validate_placement(lts, offsets, 12)
    assert src.read_text() == CSV


def test_exit_statuses_for_capacities(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", tmp_path / "a.csv", "--capacity", 12]) == 0
    assert run([src, "-o", tmp_path / "b.csv", "--capacity", 11]) == 1
    assert not (tmp_path / "b.csv").exists()
    assert "proven infeasible" in capsys.readouterr().err
    # no reuse cannot fit 12 bytes and proves nothing: status 3
    assert run([src, "-o", tmp_path / "c.csv", "--capacity", 12, "--method", "none"]) == 3
    assert not (tmp_path / "c.csv").exists()


def _many(n=1500, seed=7):
    import random

    rng = random.Random(seed)
    rows = ["id,lower,upper,size"]
    for i in range(n):
        s = rng.randrange(2000)
        rows.append(f"{i},{s},{s + rng.randint(1, 40)},{rng.randint(1, 64) * 8}")
    return "\n".join(rows) + "\n"


def test_time_limit_without_a_placement_exits_3(tmp_path, capsys):
    # 1500 buffers: the heuristics miss the bound, and placing every buffer takes
    # more search nodes than the search runs before it first reads the clock, so a
    # zero time limit stops it with no placement within the capacity.
    from model_place import live_bytes_peak, place

    src = tmp_path / "many.csv"
    src.write_text(_many())
    lts = read_lifetimes_csv(src)
    lb = live_bytes_peak(lts)
    assert place(lts, method="best-fit").arena_bytes > lb
    assert run([src, "-o", tmp_path / "o.csv", "--capacity", lb, "--time-limit", 0]) == 3
    assert not (tmp_path / "o.csv").exists()
    r = place(lts, capacity=lb, time_limit=0)
    assert r.status == "over_capacity" and r.details["stopped"] == "timeout"
    validate_placement(lts, r.offsets, r.arena_bytes)  # the best placement found is still returned
    assert r.gap > 0
    # with time, the same instance packs with zero fragmentation
    assert run([src, "-o", tmp_path / "o.csv", "--capacity", lb, "--time-limit", 30]) == 0


BAD = [
    ("", "empty file"),
    ("id,lower,upper\n0,0,1\n", "missing column 'size'"),
    ("id,lower,upper,size,colour\n", "unknown column 'colour'"),
    ("id,lower,upper,size\n0,0,1,-4\n", "line 2: size must be >= 0"),
    ("id,lower,upper,size\n0,0,1,4\n1,3,3,4\n", "line 3: need lower < upper"),
    ("id,lower,upper,size\n0,0,1,4\n1,5,2,4\n", "line 3: need lower < upper"),
    ("id,lower,upper,size\n0,0,1,4\n0,1,2,4\n", "line 3: duplicate id '0' (first on line 2)"),
    ("id,lower,upper,size\n0,0,1,x\n", "line 2: size must be an integer"),
    ("id,lower,upper,size\n0,0,1\n", "line 2: expected 4 fields"),
    ("id,lower,upper,size,alignment\n0,0,1,4,0\n", "line 2: alignment must be >= 1"),
    # found by fuzzing (issue 14): Python's int() takes these, a CSV reader must not
    ("id,lower,upper,size\n0,0,1,1_000\n", "line 2: size must be an integer, got '1_000'"),
    ("id,lower,upper,size\n0,0,\u0661,4\n", "line 2: upper must be an integer"),
    ("id,lower,upper,size\n0,0,1," + "9" * 5000 + "\n", "line 2: size must be an integer"),
    (f"id,lower,upper,size\n0,0,1,{2**63}\n", "line 2: size must be < 2**62 bytes"),
    (f"id,lower,upper,size,alignment\n0,0,1,4,{2**62}\n", "line 2: alignment must be < 2**62 bytes"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_input_exits_2_naming_the_line(tmp_path, capsys, text, message):
    src = tmp_path / "bad.csv"
    src.write_text(text)
    assert run([src, "-o", tmp_path / "o.csv"]) == 2
    out = capsys.readouterr().out
    assert message in out and "model-opt: error:" in out
    assert not (tmp_path / "o.csv").exists()


def test_never_overwrites_the_input(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", src]) == 2
    assert src.read_text() == CSV
    assert "is the input file" in capsys.readouterr().out


def test_missing_file_and_unknown_method(tmp_path, capsys):
    assert run([tmp_path / "nope.csv", "-o", tmp_path / "o.csv"]) == 2
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", tmp_path / "o.csv", "--method", "magic"]) == 2
    assert "unknown placer 'magic'" in capsys.readouterr().out


def _graph() -> Graph:
    return Graph(
        [Buffer("w", 16, persistent=True), Buffer("x", 8, kind="input"), Buffer("a", 32), Buffer("b", 24),
         Buffer("c", 8), Buffer("loss", 4, output=True)],
        [Op("f1", inputs=["x", "w"], outputs=["a"]), Op("f2", inputs=["a"], outputs=["b"]),
         Op("f3", inputs=["a"], outputs=["c"]), Op("f4", inputs=["b", "c"], outputs=["loss"])],
        name="tiny")


def test_graph_json_in_plan_out(tmp_path, capsys):
    g = _graph()
    src, out = tmp_path / "g.json", tmp_path / "plan.json"
    save_graph(g, src)
    assert run([src, "-o", out]) == 0
    plan = load_plan(out)
    assert plan.schedule.order == tuple(op.id for op in g.ops)
    lts = simulate(g).lifetimes
    validate_placement(lts, plan.placement.offsets, plan.placement.arena_bytes)
    assert plan.figures["placement_status"] == "optimal"
    assert plan.placement.arena_bytes == simulate(g).transient_peak_bytes


def test_plan_json_keeps_its_order_and_figures(tmp_path):
    from model_ir import Plan, Schedule

    g = _graph()
    order = Schedule(["f1", "f3", "f2", "f4"])
    src, out = tmp_path / "p.json", tmp_path / "q.json"
    save_plan(Plan(g, order, figures={"peak_bytes": 123}), src)
    assert run([src, "-o", out, "--method", "best-fit"]) == 0
    plan = load_plan(out)
    assert plan.schedule == order and plan.figures["peak_bytes"] == 123
    validate_placement(simulate(g, order).lifetimes, plan.placement.offsets, plan.placement.arena_bytes)


def _pipe(tmp_path, name: str, text: str):
    """A named pipe fed ``text`` once by a thread, as the shell's ``<(zcat in.csv.gz)``.
    A reader opening it again gets an empty file, not a hang: the thread ends each
    later open at once, for 10 seconds."""
    import errno
    import threading
    import time

    fifo = tmp_path / name
    os.mkfifo(fifo)

    def feed():
        fifo.write_text(text)
        for _ in range(200):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader is waiting: end of file
            except OSError as e:
                if e.errno not in (errno.ENXIO, errno.ENOENT):
                    raise
            time.sleep(0.05)

    threading.Thread(target=feed, daemon=True).start()
    return fifo


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_input_from_a_pipe_is_read_once(tmp_path):
    # The kind of a file named neither .csv nor .json is told by its first characters:
    # reading those, then the file again, lost them from a pipe ("empty file").
    assert run([_pipe(tmp_path, "csv-pipe", CSV), "-o", tmp_path / "o.csv"]) == 0
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0] == "id,lower,upper,size,offset"
    save_graph(_graph(), tmp_path / "g.json")
    graph_text = (tmp_path / "g.json").read_text()
    assert run([_pipe(tmp_path, "graph-pipe", graph_text), "-o", tmp_path / "p.json"]) == 0
    plan = load_plan(tmp_path / "p.json")
    assert plan.schedule.order == tuple(op.id for op in _graph().ops) and plan.placement.arena_bytes > 0


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_device_is_refused_not_read(tmp_path, capsys):
    # /dev/zero would never end; /dev/null, a device too, is safe to get wrong here
    assert run(["/dev/null", "-o", tmp_path / "o.csv"]) == 2
    assert "/dev/null: is a device, expected a file" in capsys.readouterr().out


def test_bad_json_exits_2(tmp_path, capsys):
    src = tmp_path / "g.json"
    src.write_text(json.dumps({"format": "something/9"}))
    assert run([src, "-o", tmp_path / "o.json"]) == 2
    assert "expected a 'model-ir/1' or 'model-plan/1'" in capsys.readouterr().out


def test_graph_json_under_a_scheduler_order(tmp_path, monkeypatch):
    # model-sched is another layer: a stand-in module checks the adapter, which
    # accepts anything with an ``order`` of op ids (model_sched.ScheduleResult).
    import sys
    import types

    calls = []

    def schedule(graph, *, method, time_limit=None):
        calls.append(method)
        return types.SimpleNamespace(order=("f1", "f3", "f2", "f4"))

    monkeypatch.setitem(sys.modules, "model_sched", types.SimpleNamespace(schedule=schedule))
    g = _graph()
    src, out = tmp_path / "g.json", tmp_path / "plan.json"
    save_graph(g, src)
    assert run([src, "-o", out, "--schedule", "greedy"]) == 0
    assert calls == ["greedy"]
    plan = load_plan(out)
    assert plan.schedule.order == ("f1", "f3", "f2", "f4")
    validate_placement(simulate(g, plan.schedule).lifetimes, plan.placement.offsets, plan.placement.arena_bytes)


def test_schedule_without_model_sched(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "model_sched", None)  # import fails
    src = tmp_path / "g.json"
    save_graph(_graph(), src)
    assert run([src, "-o", tmp_path / "p.json", "--schedule", "greedy"]) == 2
    assert "model-sched is not installed" in capsys.readouterr().out


def test_through_the_model_opt_command(tmp_path, capsys):
    from model_ir.cli import main

    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    assert main(["place", str(src), "-o", str(out), "--method", "best-fit"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["place", str(src), "-o", str(out), "--capacity", "11", "--force"]) == 1
    src.write_text("id,lower,upper,size\n0,0,1,-1\n")
    assert main(["place", str(src), "-o", str(out), "--force"]) == 2
    assert "line 2: size must be >= 0" in capsys.readouterr().err


def test_unwritable_output_is_a_clear_error_before_solving(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", tmp_path / "missing" / "o.csv"]) == 2
    assert "directory" in capsys.readouterr().out
    assert run([src, "-o", tmp_path]) == 2
    assert "is a directory" in capsys.readouterr().out
    assert src.read_text() == CSV


def test_write_failure_is_a_format_error_and_leaves_no_temp_file(tmp_path):
    from model_ir import FormatError, Lifetime

    from model_place.csv_format import write_placement_csv

    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(FormatError, match="is a directory"):
        write_placement_csv(target, [Lifetime("a", 0, 1, 4)], {"a": 0})
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_csv_with_a_byte_order_mark(tmp_path):
    # spreadsheet programs save UTF-8 CSV with a BOM before the header
    src = tmp_path / "bom.csv"
    src.write_bytes(b"\xef\xbb\xbf" + CSV.encode())
    assert read_lifetimes_csv(src) == parse_lifetimes_csv(CSV)


def test_options_and_files_place_would_ignore_or_misread_are_refused(tmp_path, capsys):
    """--schedule orders a graph; given with a CSV or a plan it did nothing (exit 0);
    a JSON file that is no object was reported as "format is None"."""
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", tmp_path / "o.csv", "--schedule", "lpmf"]) == 2
    assert "--schedule lpmf: orders the ops of a graph, and a CSV's lifetimes are placed as they are" in \
        capsys.readouterr().out
    g = Graph([Buffer("a", 8), Buffer("b", 8, output=True)],
              [Op("A", outputs=["a"]), Op("B", inputs=["a"], outputs=["b"])])
    plan = tmp_path / "p.json"
    save_plan(Plan(g, program_order(g)), plan)
    assert run([plan, "-o", tmp_path / "o.json", "--schedule", "program"]) == 2
    assert "a plan is placed under its own order; drop --schedule" in capsys.readouterr().out
    assert run([plan, "-o", tmp_path / "o.json"]) == 0
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    assert run([listed, "-o", tmp_path / "o2.json"]) == 2
    assert "JSON object, got list" in capsys.readouterr().out


def test_an_output_named_for_the_other_format_is_refused(tmp_path, capsys):
    """place writes a CSV's placement as CSV and a graph's as a plan JSON; an -o name
    saying otherwise got that content silently (before: a CSV in out.json)."""
    src = tmp_path / "in.csv"
    src.write_text(CSV)
    assert run([src, "-o", tmp_path / "out.json"]) == 2
    assert "place writes a CSV for this input" in capsys.readouterr().out
    graph = tmp_path / "g.json"
    save_graph(Graph([Buffer("a", 8), Buffer("b", 8, output=True)],
                     [Op("A", outputs=["a"]), Op("B", inputs=["a"], outputs=["b"])]), graph)
    assert run([graph, "-o", tmp_path / "out.csv"]) == 2
    assert "name the output" in capsys.readouterr().out and not (tmp_path / "out.csv").exists()
    assert run([graph, "-o", tmp_path / "out.plan"]) == 0  # another name is the user's choice
