"""Wrong argument types given to ``model_sched.schedule`` (issue 14, item 12)."""

import pytest

from model_ir import ModelOptError, WrongTypeError
from model_ir.json_format import graph_from_dict
from model_ir.testing.examples import diamond_json
from model_sched import schedule

G = graph_from_dict(diamond_json())


@pytest.mark.parametrize("args, kwargs, argument", [
    (("g.json",), {}, "graph"),
    ((G,), {"time_limit": "10"}, "time_limit"),
    ((G,), {"time_limit": True}, "time_limit"),
    ((G,), {"method": 3}, "method"),
    ((G,), {"solver": 1}, "solver"),
    ((G,), {"progress": "yes"}, "progress"),
])
def test_wrong_types_name_the_argument(args, kwargs, argument):
    with pytest.raises(WrongTypeError, match=f"^{argument}: expected") as e:
        schedule(*args, **kwargs)
    assert isinstance(e.value, ModelOptError) and isinstance(e.value, TypeError)


def test_integer_time_limit_is_fine():
    assert schedule(G, time_limit=5).peak_bytes == 137
