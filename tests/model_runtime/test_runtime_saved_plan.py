"""``run --plan FILE`` with an edited plan (issue 14, item 11): absurd arenas and
offsets are one-line errors, figures are recomputed rather than read from the file."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from model_ir.cli import main  # noqa: E402
from model_ir.plugins import providers  # noqa: E402

RUN = ["run", "tiny-mlp", "--batch-size", "2", "--steps", "1", "--time-limit", "0.5"]


@pytest.fixture(scope="module")
def saved_plan(tmp_path_factory):
    try:
        if "tiny-mlp" not in providers("model_opt_models"):
            pytest.skip("no zoo model tiny-mlp (model-bench not installed)")
    except Exception:  # noqa: BLE001 - the hook itself is missing without model-bench
        pytest.skip("no model zoo plugin installed")
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert main([*RUN, "--save-plan", str(path), "--json"]) == 0
    return json.loads(path.read_text())


def edited(tmp_path, data, **changes):
    data = json.loads(json.dumps(data))
    data.update(changes)
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("arena", [10**15, 2**63, 2**70])
def test_absurd_arena_is_one_line(saved_plan, tmp_path, capsys, arena):
    capsys.readouterr()
    assert main([*RUN, "--plan", str(edited(tmp_path, saved_plan, arena_bytes=arena))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("model-opt: error: ") and err.count("\n") == 1
    # beyond 64-bit sizes the file is refused as it loads; below, as a plan for this step
    assert ("side by side" if arena < 2**62 else "arena_bytes: must be >= 0 and below 2**62") in err
    assert "Traceback" not in err


def test_absurd_offset_is_one_line(saved_plan, tmp_path, capsys):
    offsets = dict(saved_plan["offsets"])
    first = next(iter(offsets))
    offsets[first] = 2**63
    path = edited(tmp_path, saved_plan, offsets=offsets, arena_bytes=2**64)
    capsys.readouterr()
    assert main([*RUN, "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("model-opt: error: ") and err.count("\n") == 1


def test_a_plan_placing_every_buffer_says_what_it_is(saved_plan, tmp_path, capsys):
    """A placement of every buffer of the graph (as `model-opt place` writes) places one
    this step keeps outside its arena: the error says so, and which plans are reused
    (it said "placement names unknown buffer" of a buffer the graph has)."""
    placed = set(saved_plan["offsets"])
    outside = next(b["id"] for b in saved_plan["graph"]["buffers"] if b["id"] not in placed and not b.get("persistent"))
    offsets = {**saved_plan["offsets"], outside: saved_plan["arena_bytes"]}
    path = edited(tmp_path, saved_plan, offsets=offsets, arena_bytes=saved_plan["arena_bytes"] + 4096)
    capsys.readouterr()
    assert main([*RUN, "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"the saved plan places buffer {outside!r}, which this step keeps outside its arena" in err
    assert "model-opt run --save-plan" in err and err.count("\n") == 1


def test_edited_figures_are_not_displayed(saved_plan, tmp_path, capsys):
    figures = dict(saved_plan["figures"], lower_bound_bytes=7, arena_lower_bound_bytes=7, peak_bytes=7,
                   schedule_gap=0.5)
    capsys.readouterr()
    assert main([*RUN, "--plan", str(edited(tmp_path, saved_plan, figures=figures)), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["peak_bytes"] == saved_plan["figures"]["peak_bytes"]
    # the bounds are recomputed (the forced-liveness bound, the live-bytes peak)
    assert 7 < shown["lower_bound_bytes"] <= shown["peak_bytes"]
    assert 7 < shown["arena_lower_bound_bytes"] <= shown["arena_bytes"]
    assert shown["schedule_gap"] == pytest.approx(1 - shown["lower_bound_bytes"] / shown["peak_bytes"])


def test_arena_allocation_failure_is_a_runtime_error(monkeypatch):
    import torch

    from model_ir import Placement, Plan, Schedule
    from model_ir.graph import Graph
    from model_runtime import executors
    from model_runtime.errors import RuntimeLayerError

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 931.32 GiB\nmore details")

    monkeypatch.setattr(executors.torch, "empty", no_memory)
    plan = Plan(Graph([], []), Schedule(()), Placement({}, 10**12))
    with pytest.raises(RuntimeLayerError, match="cannot allocate the arena of 1000000000000 bytes on cpu: CUDA out"):
        executors.build_arena(None, plan, device=torch.device("cpu"))
