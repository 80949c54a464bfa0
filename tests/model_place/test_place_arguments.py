"""Wrong argument types given to ``model_place.place`` (issue 14, item 12)."""

import pytest

from model_ir import Lifetime, ModelOptError, WrongTypeError
from model_place import check_lifetimes, place

L = [Lifetime("a", 0, 2, 4), Lifetime("b", 1, 3, 4)]


@pytest.mark.parametrize("args, kwargs, argument", [
    (("x.csv",), {}, "lifetimes"),
    ((5,), {}, "lifetimes"),
    (([("a", 0, 1, 4)],), {}, r"lifetimes\[0\]"),
    ((L,), {"time_limit": "10"}, "time_limit"),
    ((L,), {"time_limit": True}, "time_limit"),
    ((L,), {"capacity": "16"}, "capacity"),
    ((L,), {"capacity": True}, "capacity"),
    ((L,), {"method": None}, "method"),
    ((L,), {"progress": 1}, "progress"),
])
def test_wrong_types_name_the_argument(args, kwargs, argument):
    with pytest.raises(WrongTypeError, match=f"^{argument}: expected") as e:
        place(*args, **kwargs)
    assert isinstance(e.value, ModelOptError) and isinstance(e.value, TypeError)


def test_a_path_points_to_the_csv_reader():
    with pytest.raises(WrongTypeError, match="read_lifetimes_csv"):
        check_lifetimes("x.csv")
