"""A third-party placer's answer is checked and its figures are model-place's own: its
offsets and arena are validated, its status, capacity and method recomputed, its lower
bound kept only where it is sound, and an answer that contradicts itself is the
plugin's invalid answer (exit status 4)."""

from __future__ import annotations

import pytest
from model_ir import Lifetime
from model_ir.errors import PluginFailedError
from model_ir.hookspecs import hookimpl
from model_ir.plugins import plugin_manager

from model_place import place
from model_place.result import PlacementResult

L = [Lifetime("a", 0, 2, 8), Lifetime("b", 1, 3, 8), Lifetime("c", 2, 4, 8)]  # live-bytes peak 16
# Lifetimes of tests/model_place/test_place_cli.py: live-bytes peak 12, sizes add up to 32.
CSV = "id,lower,upper,size\n0,0,3,4\n1,0,1,8\n2,1,3,8\n3,3,5,12\n"


def stack(lifetimes):
    """Every buffer on top of the previous one: a valid placement, arena = sum of sizes."""
    offsets, top = {}, 0
    for lt in lifetimes:
        offsets[lt.id], top = top, top + lt.size
    return offsets, top


class Stacker:
    """Answers a stacked placement with the figures ``answer(capacity, arena)`` gives:
    ``(lower_bound_bytes, status, method, capacity)``, as a careless plugin might."""

    help = "test plugin"

    def __init__(self, name, answer):
        self.name, self.answer = name, answer

    def place(self, lifetimes, *, capacity=None, time_limit=None):
        offsets, arena = stack(lifetimes)
        bound, status, method, cap = self.answer(capacity, arena)
        return PlacementResult(offsets, arena, bound, status, 0.5, method, cap)


ANSWERS = {
    # ignores the capacity: no capacity in its result, "feasible"
    "test-ignores-capacity": lambda cap, arena: (0, "feasible", "test-ignores-capacity", None),
    # proves nothing beyond zero, claims optimality, and calls itself another name
    "test-weak-bound": lambda cap, arena: (0, "optimal", "exact", cap),
    # a lower bound above its own arena (a negative gap)
    "test-bound-above-arena": lambda cap, arena: (arena + 6, "optimal", "test-bound-above-arena", cap),
    # "infeasible" whatever the capacity, even one its placement fits
    "test-claims-infeasible": lambda cap, arena: (arena, "infeasible", "test-claims-infeasible", cap),
    # a status model-place does not know
    "test-odd-status": lambda cap, arena: (arena, "great", "test-odd-status", cap),
    # a lower bound that is not a whole number of bytes
    "test-float-bound": lambda cap, arena: (16.5, "feasible", "test-float-bound", cap),
    # a proof that raises the bound above the live bytes (and above the capacity)
    "test-proves": lambda cap, arena: (arena - 4, "feasible", "test-proves", cap),
}


class Plugin:
    @hookimpl
    def model_opt_placers(self):
        return [Stacker(name, answer) for name, answer in ANSWERS.items()]


@pytest.fixture
def placers():
    pm = plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    yield
    pm.unregister(plugin)


def test_a_placer_ignoring_the_capacity_is_over_capacity(placers):
    r = place(L, method="test-ignores-capacity", capacity=16)
    assert (r.arena_bytes, r.capacity, r.status, r.fits) == (24, 16, "over_capacity", False)
    # its lower bound (0) is raised to the live-bytes peak
    assert r.lower_bound_bytes == 16 and r.gap == pytest.approx(1 / 3)
    # the same as the built-in no-reuse placer reports
    none = place(L, method="none", capacity=16)
    assert (none.arena_bytes, none.status, none.fits) == (24, "over_capacity", False)
    r = place(L, method="test-ignores-capacity", capacity=24)
    assert (r.capacity, r.status, r.fits) == (24, "feasible", True)


def test_status_and_method_are_model_places_own(placers):
    r = place(L, method="test-weak-bound")
    assert r.method == "test-weak-bound"  # not the "exact" it claimed
    assert (r.lower_bound_bytes, r.status, r.optimal, r.capacity) == (16, "feasible", False, None)
    assert r.seconds == 0.5 and r.offsets == {"a": 0, "b": 8, "c": 16}


def test_a_proven_bound_is_kept_and_can_prove_a_capacity_infeasible(placers):
    r = place(L, method="test-proves")
    assert (r.lower_bound_bytes, r.status) == (20, "feasible")
    r = place(L, method="test-proves", capacity=18)
    assert (r.lower_bound_bytes, r.status, r.capacity) == (20, "infeasible", 18)
    r = place(L, method="test-proves", capacity=20)
    assert r.status == "over_capacity"  # its bound does not exceed the capacity


@pytest.mark.parametrize("method, capacity, message", [
    ("test-bound-above-arena", None, "lower bound 30 bytes exceeds its own arena of 24 bytes"),
    ("test-claims-infeasible", 32, "status 'infeasible' for a placement of 24 bytes, but it fits the capacity "
                                   "of 32 bytes"),
    ("test-claims-infeasible", None, "status 'infeasible' .* no capacity was asked"),
    ("test-odd-status", None, "status 'great' is none of optimal, feasible, infeasible, over_capacity"),
    ("test-float-bound", None, "lower bound must be a whole number of bytes, got 16.5"),
])
def test_a_self_contradicting_answer_is_the_plugins_invalid_answer(placers, method, capacity, message):
    with pytest.raises(PluginFailedError, match=rf"plugin Plugin .* failed: placer '{method}' gave an invalid "
                                                rf"answer: {message}") as caught:
        place(L, method=method, capacity=capacity)
    assert caught.value.exit_code == 4


def test_an_infeasible_claim_with_a_placement_that_does_not_fit_is_kept_only_if_proven(placers):
    # 24 bytes do not fit 20: "infeasible" is not contradicted, but its bound (24) proves it
    r = place(L, method="test-claims-infeasible", capacity=20)
    assert (r.status, r.lower_bound_bytes) == ("infeasible", 24)


def test_the_command_exit_statuses(placers, tmp_path, capsys):
    from model_ir.cli import main

    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(CSV)
    # arena 32 > 16: nothing written, exit 3 (as --method none), not 0
    assert main(["place", str(src), "-o", str(out), "--method", "test-ignores-capacity", "--capacity", "16"]) == 3
    assert not out.exists()
    assert "status over_capacity" in capsys.readouterr().out
    assert main(["place", str(src), "-o", str(out), "--method", "test-ignores-capacity", "--capacity", "32"]) == 0
    assert out.exists()
    capsys.readouterr()
    # "infeasible" for a placement that fits: the plugin's fault (4), not "proven infeasible" (1)
    assert main(["place", str(src), "-o", str(tmp_path / "x.csv"), "--method", "test-claims-infeasible",
                 "--capacity", "40"]) == 4
    err = capsys.readouterr().err
    assert "plugin Plugin" in err and "test-claims-infeasible" in err and "proven infeasible" not in err
    assert not (tmp_path / "x.csv").exists()
    assert main(["place", str(src), "-o", str(tmp_path / "x.csv"), "--method", "test-bound-above-arena"]) == 4
    assert not (tmp_path / "x.csv").exists()
