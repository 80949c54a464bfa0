"""``model-opt schedule``: text and JSON output, plans, user mistakes."""

import argparse
import json

import pytest

from model_ir.json_format import load_plan, save_graph
from model_ir.simulator import simulate
from model_sched.cli_schedule import ScheduleCommand

from .conftest import pairs_graph


def run(argv):
    cmd = ScheduleCommand()
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    return cmd.run(parser.parse_args(argv))


@pytest.fixture
def pairs_file(tmp_path):
    p = tmp_path / "pairs.json"
    save_graph(pairs_graph(8), p)
    return p


def test_json_output_and_plan(pairs_file, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert run([str(pairs_file), "--json", "-o", str(plan_path), "--time-limit", "5"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert {"order", "peak_bytes", "eager_peak_bytes", "lower_bound_bytes", "optimal", "seconds"} <= set(data)
    assert data["peak_bytes"] == 80 and data["eager_peak_bytes"] == 360 and data["optimal"] is True
    plan = load_plan(plan_path)  # validates the order
    assert list(plan.schedule.order) == data["order"]
    assert simulate(plan.graph, plan.schedule).peak_bytes == plan.figures["peak_bytes"] == 80
    assert "best" in err  # progress on stderr


def test_text_output(pairs_file, capsys):
    assert run([str(pairs_file), "--method", "greedy", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "eager peak:      360 B" in out and "optimized peak:  80 B" in out
    assert "saving:          280 B (77.8% of the eager peak)" in out  # a positive share (was "(-77.8%)")
    assert "(optimal)" in out and err == ""


def test_refuses_to_overwrite_its_input(pairs_file):
    from model_ir import FormatError

    before = pairs_file.read_text()
    with pytest.raises(FormatError, match="is the input file"):
        run([str(pairs_file), "-o", str(pairs_file), "--force"])
    assert pairs_file.read_text() == before


def test_through_model_opt_main(pairs_file, capsys):
    from model_ir.cli import main

    assert main(["schedule", str(pairs_file), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["peak_bytes"] == 80
    assert main(["schedule", str(pairs_file), "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "model-opt: error: unknown scheduler 'nope'" in err and "Traceback" not in err


def test_unwritable_output_is_a_clear_error(pairs_file, tmp_path):
    from model_ir import FormatError

    with pytest.raises(FormatError, match="no such directory"):
        run([str(pairs_file), "-o", str(tmp_path / "missing" / "plan.json"), "--quiet"])
    with pytest.raises(FormatError, match="is a directory"):
        run([str(pairs_file), "-o", str(tmp_path), "--quiet"])
