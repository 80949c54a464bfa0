"""The ``model-opt`` parser (issue 14, item 13): option errors are one line with exit
status 2, negative-number-like values are values, ``--version``, sizes with units."""

import argparse
import importlib.util
import subprocess
import sys

import pytest

from model_ir.cli import main
from model_ir.cli_values import byte_size, parse_bytes, seconds, whole_number

CSV = "id,lower,upper,size\na,0,2,512\nb,1,3,512\n"

# The commands of the other layers, tested here when those are installed.
PLACE, SCHEDULE, RUN = (pytest.mark.needs(m) for m in ("model_place", "model_sched", "model_runtime"))


@pytest.fixture
def csv_file(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text(CSV)
    return p


def one_line_error(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("model-opt: error: ") and err.count("\n") == 1, err
    assert "usage:" not in err
    return err


@pytest.mark.parametrize("argv, needle", [
    pytest.param(["place", "{csv}"], "place: the following arguments are required: -o/--output", marks=PLACE),
    pytest.param(["place", "{csv}", "-o", "{out}", "--capacity", "lots"],
                 "argument --capacity: cannot read size 'lots'", marks=PLACE),
    pytest.param(["place", "{csv}", "-o", "{out}", "--time-limit", "soon"], "argument --time-limit", marks=PLACE),
    pytest.param(["place", "{csv}", "-o", "{out}", "--nope"], "unrecognized arguments: --nope", marks=PLACE),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
    pytest.param(["schedule", "{csv}", "--time-limit", "1_0"], "expected a number of seconds, got '1_0'",
                 marks=SCHEDULE),
    pytest.param(["run", "tiny-mlp", "--batch-size", "\u0661\u0662"], "argument --batch-size: expected a whole number",
                 marks=RUN),
])
def test_option_errors_are_one_line(argv, needle, csv_file, tmp_path, capsys):
    args = [a.format(csv=csv_file, out=tmp_path / "out.csv") for a in argv]
    assert needle in one_line_error(args, capsys)


@PLACE
@pytest.mark.parametrize("value", ["-inf", "-1", "-2.5", "-1e3"])
def test_negative_time_limit_is_a_value_with_a_clear_message(value, csv_file, tmp_path, capsys):
    err = one_line_error(["place", csv_file, "-o", tmp_path / "out.csv", "--time-limit", value], capsys)
    assert "argument --time-limit: must be >= 0 seconds" in err


@PLACE
def test_console_script_error_is_one_line(csv_file):
    proc = subprocess.run([sys.executable, "-m", "model_ir.cli", "place", str(csv_file)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage" not in proc.stderr


def test_version_lists_each_installed_layer(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    out = capsys.readouterr().out.split("\n")
    assert stop.value.code == 0
    installed = [layer for layer in ("model-ir", "model-sched", "model-place", "model-runtime", "model-bench")
                 if importlib.util.find_spec(layer.replace("-", "_"))]
    assert [line.split()[0] for line in out if line] == installed


@PLACE
def test_capacity_takes_the_size_syntax_of_memory(csv_file, tmp_path, capsys):
    assert main(["place", str(csv_file), "-o", str(tmp_path / "out.csv"), "--capacity", "1KiB"]) == 0
    assert main(["place", str(csv_file), "-o", str(tmp_path / "tight.csv"), "--capacity", "1000B"]) == 1


@pytest.mark.parametrize("text, value", [("1KiB", 1024), ("1.5 kib", 1536), ("16GB", 16 * 10**9), ("0", 0),
                                         (".5KB", 500), (f"{2**62 + 1}", 2**62 + 1)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value
    assert byte_size(0)(text) == value


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "-1", "1e3", "lots", "16 GiBs", ""])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError):
        parse_bytes(text)
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(0)(text)


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "1" * 5000])
def test_whole_numbers_are_ascii_digits(text):
    with pytest.raises(argparse.ArgumentTypeError):
        whole_number(0)(text)


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "1e99999", "0x10"])
def test_seconds_are_ascii_numbers(text):
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(allow_zero=True)(text)
