"""Wrong argument types at the public entry points (issue 14, item 12): a
``WrongTypeError`` (a ``ModelOptError`` and a ``TypeError``) naming the argument."""

import pytest

import model_ir
from model_ir import ModelOptError, WrongTypeError
from model_ir.json_format import graph_from_dict
from model_ir.testing.examples import diamond_json

G = graph_from_dict(diamond_json())


@pytest.mark.parametrize("call, argument", [
    (lambda: model_ir.load_graph(None), "path"),
    (lambda: model_ir.load_plan(3), "path"),
    (lambda: model_ir.simulate(G, "AB"), "order"),  # a string is not a list of op ids
    (lambda: model_ir.simulate("g.json"), "graph"),
    (lambda: model_ir.save_graph("g", "out.json"), "graph"),
    (lambda: model_ir.save_plan(G, "out.json"), "plan"),
])
def test_wrong_types_name_the_argument(call, argument):
    with pytest.raises(WrongTypeError, match=f"^{argument}: expected") as e:
        call()
    assert isinstance(e.value, ModelOptError) and isinstance(e.value, TypeError)


def test_a_list_of_op_ids_still_works():
    assert model_ir.simulate(G, ["A", "B"]).peak_bytes == model_ir.simulate(G).peak_bytes
