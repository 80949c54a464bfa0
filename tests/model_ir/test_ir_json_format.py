"""Loading graph and plan JSON: the issue's example loads; every malformed file names its field."""

import json
import os

import pytest

from model_ir import (FormatError, Placement, Plan, Schedule, load_graph, load_plan, plan_to_dict, program_order,
                      save_graph, save_plan, simulate)

from model_ir.testing.examples import diamond_json

DIAMOND = diamond_json()


def write(tmp_path, data, name="g.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_issue_example_loads(tmp_path):
    g = load_graph(write(tmp_path, DIAMOND))
    assert g.name == "diamond"
    assert [o.id for o in g.ops] == ["A", "B"]
    assert g.buffer("w").persistent and g.buffer("loss").output
    assert simulate(g).peak_bytes == 137


def test_optional_fields_round_trip(tmp_path):
    data = json.loads(json.dumps(DIAMOND))
    data["buffers"][0].update(kind="activation", dtype="float32", shape=[2, 3], meta={"node": "relu"})
    data["ops"][0].update(target="aten.relu.default", meta={"node": "relu", "x": [1]})
    data["meta"] = {"source": "test", "granularity": 512, "device": None, "cuda_capability": [9, 0],
                    "flops": {"total": 10, "forward": 2.5}, "train": True, "arena_fallbacks": ["t1"],
                    "arena_temporaries": {"A": 64}}
    data["ops"][1]["meta"] = {"phase": "backward", "flops": 4, "reduction": {
        "shape": [2, 3], "strides": [3, 1], "dims": None, "dtype": "float32"}}
    g = load_graph(write(tmp_path, data))
    out = tmp_path / "out.json"
    save_graph(g, out)
    assert load_graph(out) == g
    again = json.loads(out.read_text())
    assert again["buffers"][0]["shape"] == [2, 3]
    assert again["ops"][0]["target"] == "aten.relu.default"
    assert again["meta"] == data["meta"]


def mutate(path, value):
    data = json.loads(json.dumps(DIAMOND))
    *keys, last = path
    obj = data
    for k in keys:
        obj = obj[k]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (mutate(["format"], "model-ir/0"), "format: expected 'model-ir/1'"),
        (mutate(["format"], KeyError), "missing required field 'format'"),
        (mutate(["buffers"], KeyError), "missing required field 'buffers'"),
        (mutate(["buffers", 0, "size"], -5), r"buffers\[0\].size: must be >= 0"),
        (mutate(["buffers", 0, "size"], 1.5), r"buffers\[0\].size: expected an integer"),
        (mutate(["buffers", 0, "size"], True), r"buffers\[0\].size: expected an integer"),
        (mutate(["buffers", 1, "persistent"], "yes"), r"buffers\[1\].persistent: expected true or false"),
        (mutate(["buffers", 0, "colour"], 1), r"buffers\[0\]: unknown field 'colour'"),
        (mutate(["ops", 1, "inputs", 0], 3), r"ops\[1\].inputs\[0\]: expected a string id"),
        (mutate(["ops", 1, "inputs"], ["nope"]), "invalid graph: op 'B': inputs names unknown buffer 'nope'"),
        (mutate(["ops", 0, "id"], "B"), "invalid graph: duplicate op id 'B'"),
        (mutate(["ops", 0, "inputs"], ["loss"]), "op 'A' uses buffer 'loss' before op 'B' produces it"),
        (mutate(["ops"], {"A": 1}), "ops: expected a list"),
        ([1, 2], "top level: expected an object"),
        # meta fields the layers read are checked at load, not deep inside a command
        (mutate(["meta"], {"granularity": "abc"}), r'meta.granularity: expected a positive integer \(bytes\), got "abc"'),
        (mutate(["meta"], {"granularity": 0}), "meta.granularity: expected a positive integer"),
        (mutate(["meta"], {"cuda_capability": [9]}), r"meta.cuda_capability: expected \[major, minor\]"),
        (mutate(["meta"], {"cuda_sm_count": 0}), "meta.cuda_sm_count: expected a positive integer"),
        (mutate(["meta"], {"flops": {"total": -1}}), "meta.flops: expected an object of non-negative numbers"),
        (mutate(["meta"], {"arena_fallbacks": "x"}), "meta.arena_fallbacks: expected a list of buffer ids"),
        (mutate(["meta"], {"arena_temporaries": {"relu": -1}}), "meta.arena_temporaries: expected an object of op ids"),
        (mutate(["meta"], {"device": 0}), "meta.device: expected a string or null"),
        (mutate(["meta"], {"train": "yes"}), "meta.train: expected true or false"),
        (mutate(["ops", 0, "meta"], {"flops": 1.5}), r"ops\[0\].meta.flops: expected a non-negative integer"),
        (mutate(["ops", 0, "meta"], {"reduction": {"shape": [2]}}), r"ops\[0\].meta.reduction: expected an object"),
        (mutate(["ops", 0, "meta"], {"reduction": {"shape": [], "strides": [], "dims": [0], "dtype": "float32"}}),
         r"ops\[0\].meta.reduction: expected an object"),
        (mutate(["buffers", 0, "meta"], {"released_after": 3}), r"buffers\[0\].meta.released_after: expected an op id"),
        (mutate(["buffers", 0, "shape"], [2, -1]), r"buffers\[0\].shape: expected a list of non-negative integers"),
        (mutate(["ops", 1, "meta"], {"eager_in_place": [1]}), r"ops\[1\].meta.eager_in_place: expected a buffer id"),
        # ids the layers look up name a buffer or op of the graph (before: a KeyError in
        # the arena's planning, a TypeError in the simulator, or silently ignored)
        (mutate(["meta"], {"arena_fallbacks": ["t1", "zz"]}),
         'meta.arena_fallbacks: names no buffer of the graph: "zz"'),
        (mutate(["meta"], {"arena_temporaries": {"Z": 1}}), 'meta.arena_temporaries: names no op of the graph: "Z"'),
        (mutate(["buffers", 0, "meta"], {"released_after": "Z"}),
         r'buffers\[0\].meta.released_after: names no op of the graph: "Z"'),
        (mutate(["ops", 1, "meta"], {"eager_in_place": "zz"}),
         r'ops\[1\].meta.eager_in_place: names no buffer of the graph: "zz"'),
    ],
)
def test_malformed_graphs_name_file_and_field(tmp_path, data, message):
    p = write(tmp_path, data)
    with pytest.raises(FormatError, match=message) as e:
        load_graph(p)
    assert str(p) in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(FormatError, match="not valid JSON: .* line 1"):
        load_graph(write(tmp_path, "{nope"))
    with pytest.raises(FormatError, match="no such file"):
        load_graph(tmp_path / "missing.json")
    with pytest.raises(FormatError, match="is a directory, expected a file"):
        load_graph(tmp_path)
    if os.path.exists("/dev/null"):  # a device (/dev/zero would never end) is not read
        with pytest.raises(FormatError, match="/dev/null: is a device, expected a file"):
            load_graph("/dev/null")


def test_plan_round_trip_and_graph_inside_plan(tmp_path):
    g = load_graph(write(tmp_path, DIAMOND))
    plan = Plan(g, program_order(g), Placement({"t1": 0, "loss": 10}, 14), {"peak_bytes": 137})
    p = tmp_path / "plan.json"
    save_plan(plan, p)
    back = load_plan(p)
    assert back.schedule == Schedule(("A", "B"))
    assert back.placement.offsets == {"t1": 0, "loss": 10}
    assert back.figures == {"peak_bytes": 137}
    assert load_graph(p) == g  # a plan file is accepted wherever a graph is


def test_a_placed_plan_with_recomputations_round_trips(tmp_path):
    """The arena executor places each later instance of a recomputed buffer apart
    (``a0@2``); loading such a plan failed with "names no buffer of the graph", so no
    placed plan made under a memory budget could be reused."""
    from model_ir.testing.examples import training_chain

    g = training_chain(2)
    order = Schedule(("f0", "f1", "b1", "f0", "b0", "update"))
    plan = Plan(g, order, Placement({"a0": 0, "a1": 100, "g1": 200, "a0@2": 0, "g0": 201}, 300))
    p = tmp_path / "plan.json"
    save_plan(plan, p)
    assert load_plan(p).placement.offsets == plan.placement.offsets
    bad = write(tmp_path, plan_to_dict(Plan(g, order, Placement({"a0@3": 0}, 300))), "bad.json")  # f0 runs twice
    with pytest.raises(FormatError, match="offsets.a0@3: names no buffer of the graph nor an instance"):
        load_plan(bad)


def test_saving_over_an_existing_file_names_the_argument_not_the_cli_option(tmp_path):
    g = load_graph(write(tmp_path, DIAMOND))
    p = tmp_path / "plan.json"
    p.write_text("keep me")
    with pytest.raises(FormatError, match="file exists; pass overwrite=True to replace it"):
        save_plan(Plan(g, program_order(g)), p, overwrite=False)
    with pytest.raises(FormatError, match="pass overwrite=True"):
        save_graph(g, p, overwrite=False)
    assert p.read_text() == "keep me"
    save_plan(Plan(g, program_order(g)), p, overwrite=True)
    assert load_plan(p).schedule == program_order(g)


@pytest.mark.parametrize("schedule, placement, message", [
    (("B", "A"), None, "order: schedule runs op 'B' before op 'A'"),
    (("A", "B"), Placement({"t1": 0}, -1), "arena_bytes: must be >= 0"),
    (("A", "B"), Placement({"t1": 2**70}, 2**71), r"offsets.t1: expected a non-negative integer below 2\*\*62"),
    # before: accepted at load (checked only when optimize() reused the plan)
    (("A", "B"), Placement({"t1": 0, "loss": 8}, 12), r"offsets: buffers 't1' and 'loss' are alive together"),
    (("A", "B"), Placement({"t1": 0}, 6), r"offsets: buffer 't1': \[0, 10\) does not fit the arena of 6 bytes"),
    (("A", "B"), Placement({"t1": 0, "w": 16}, 200), "offsets.w: a persistent buffer, which lives outside the arena"),
])
def test_invalid_plans_are_refused_at_load_and_never_saved(tmp_path, schedule, placement, message):
    """What load_plan refuses, save_plan refuses too, before writing: a good file is not
    replaced by one that cannot be loaded again (before: written, then refused)."""
    g = load_graph(write(tmp_path, DIAMOND))
    bad = Plan(g, Schedule(schedule), placement)
    with pytest.raises(FormatError, match=message):
        load_plan(write(tmp_path, plan_to_dict(bad), "bad.json"))
    p = tmp_path / "plan.json"
    save_plan(Plan(g, program_order(g), Placement({"t1": 0, "loss": 16}, 20)), p)
    good = p.read_text()
    with pytest.raises(FormatError, match=f"the plan to save: {message}"):
        save_plan(bad, p)
    assert p.read_text() == good


def test_graphs_and_plans_json_cannot_hold_are_refused_before_writing(tmp_path):
    import attrs

    g = load_graph(write(tmp_path, DIAMOND))
    p = tmp_path / "g.json"
    save_graph(g, p)
    good = p.read_text()
    with pytest.raises(FormatError, match="the graph to save has a value JSON cannot hold: .*set"):
        save_graph(attrs.evolve(g, meta={"tags": {1, 2}}), p)
    with pytest.raises(FormatError, match="the graph to save: meta.granularity: expected a positive integer"):
        save_graph(attrs.evolve(g, meta={"granularity": 0}), p)
    assert p.read_text() == good
