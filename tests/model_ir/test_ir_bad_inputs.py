"""Inputs found by fuzzing (issue 14, items 10 and 13): each gives one line
``model-opt: error: ...`` and exit status 2, never a traceback."""

import json

import pytest

from model_ir import FormatError, GraphError, load_graph
from model_ir.cli import main
from model_ir.graph import MAX_TOTAL_BYTES, Buffer, Graph
from model_ir.json_format import graph_from_dict
from model_ir.testing.examples import diamond_json


def one_line_error(argv, capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("model-opt: error: ") and err.count("\n") == 1, err
    return err


def diamond_text(**changes) -> str:
    data = diamond_json()
    data.update(changes)
    return json.dumps(data)


def test_json_nested_990_deep(tmp_path, capsys):
    p = tmp_path / "deep.json"
    p.write_text(diamond_text(meta={"x": 0}).replace('"x": 0', '"x": ' + "[" * 990 + "]" * 990))
    assert "nested too deeply" in one_line_error(["info", str(p)], capsys)


def test_meta_nested_deeper_than_the_limit_names_the_field(tmp_path, capsys):
    p = tmp_path / "deep.json"
    p.write_text(diamond_text(meta={"x": 0}).replace('"x": 0', '"x": ' + "[" * 200 + "]" * 200))
    assert "meta.x[0]" in one_line_error(["info", str(p)], capsys)


def test_integer_literal_over_4300_digits(tmp_path, capsys):
    p = tmp_path / "big.json"
    data = diamond_json()
    text = json.dumps(data).replace('"size": 10', '"size": ' + "1" * 4400)
    p.write_text(text)
    assert "more than 4300 digits" in one_line_error(["info", str(p)], capsys)


@pytest.mark.parametrize("command", ["info", pytest.param("schedule", marks=pytest.mark.needs("model_sched"))])
def test_buffer_of_2_to_the_63_bytes(tmp_path, capsys, command):
    p = tmp_path / "huge.json"
    p.write_text(json.dumps(diamond_json()).replace('"size": 10', f'"size": {2**63}'))
    err = one_line_error([command, str(p)], capsys)
    assert "buffers[0].size: must be < 2**62 bytes" in err


def test_buffers_adding_up_past_the_limit_are_refused():
    with pytest.raises(GraphError, match="add up to"):
        Graph([Buffer("a", MAX_TOTAL_BYTES), Buffer("b", 1)], [])
    Graph([Buffer("a", MAX_TOTAL_BYTES)], [])


@pytest.mark.needs("model_sched")
@pytest.mark.parametrize("field", ["name", "ops[0].id", "buffers[0].kind", "meta.note"])
def test_lone_surrogate_is_rejected_at_load(tmp_path, capsys, field):
    data = diamond_json()
    if field == "name":
        data["name"] = "g\ud800"
    elif field == "ops[0].id":
        data["ops"][0]["id"] = "A\udfff"
        data["ops"][1]["after"] = []
    elif field == "buffers[0].kind":
        data["buffers"][0]["kind"] = "\ud800"
    else:
        data["meta"] = {"note": ["ok", "\ud800"]}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(data))  # ensure_ascii writes the escape "\ud800"
    err = one_line_error(["schedule", str(p), "--quiet", "-o", str(tmp_path / "plan.json")], capsys)
    assert "lone UTF-16 surrogate" in err and field.split(".")[0] in err
    assert not (tmp_path / "plan.json").exists()


def test_surrogate_pair_is_a_character_and_loads(tmp_path):
    p = tmp_path / "emoji.json"
    p.write_text(diamond_text(name="\U0001F600"))  # written as "\ud83d\ude00"
    assert load_graph(p).name == "\U0001F600"


def test_unknown_top_level_field_is_rejected(tmp_path, capsys):
    p = tmp_path / "g.json"
    p.write_text(diamond_text(colour="red"))
    assert "top level: unknown field 'colour'" in one_line_error(["info", str(p)], capsys)


def test_unknown_top_level_field_of_a_plan_is_rejected():
    from model_ir import plan_from_dict, plan_to_dict, program_order
    from model_ir.plan import Plan

    g = graph_from_dict(diamond_json())
    data = plan_to_dict(Plan(g, program_order(g)))
    data["extra"] = 1
    with pytest.raises(FormatError, match="unknown field 'extra'"):
        plan_from_dict(data)


def test_json_with_a_byte_order_mark_loads(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(diamond_json()).encode())
    assert load_graph(p).name == "diamond"


def test_messages_are_not_garbled(tmp_path, capsys):
    p = tmp_path / "g.json"
    p.write_text("{}")
    err = one_line_error(["info", str(p)], capsys)
    assert ": : " not in err and "top level: missing required field 'format'" in err
    p.write_text('{"format": "model-ir/1", "name": "unterminated')
    err = one_line_error(["info", str(p)], capsys)
    assert "at at" not in err and "Unterminated string starting at line 1" in err
