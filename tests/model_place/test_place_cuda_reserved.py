"""The caching-allocator simulation against ``torch.cuda.memory_reserved()``.

Needs a CUDA GPU and torch (run with ``uv run pytest -m gpu tests/model_place``).
It replays the same lifetimes with real ``torch.empty`` allocations in a fresh
process (so no other tensor shares the cache) and compares reserved bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from model_place import simulate_caching_allocator

KiB, MiB = 1 << 10, 1 << 20

REPLAY = r"""
import json, sys, torch
lts = json.loads(sys.stdin.read())
events = sorted([(s, 1, i) for i, (s, e, n) in enumerate(lts)] + [(e, 0, i) for i, (s, e, n) in enumerate(lts)])
torch.cuda.init(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
base = torch.cuda.memory_reserved()
live = {}
for t, kind, i in events:
    if kind:
        live[i] = torch.empty(lts[i][2], dtype=torch.uint8, device="cuda")
    else:
        del live[i]
print(json.dumps({"reserved": torch.cuda.max_memory_reserved() - base,
                  "allocated": torch.cuda.max_memory_allocated()}))
"""

CASES = {
    "small-pool": [(0, 3, 700 * KiB), (0, 2, 700 * KiB), (1, 4, 700 * KiB), (2, 5, 300 * KiB), (3, 6, 1000)],
    "large-pool": [(0, 2, 5 * MiB), (0, 3, 12 * MiB), (1, 4, 11 * MiB), (3, 5, 3 * MiB), (4, 6, 19 * MiB)],
    "mixed": [(i, i + 3, (i * 977 % 13 + 1) * 300 * KiB) for i in range(40)],
    "growing": [(i, i + 2, (12 + 2 * i) * MiB) for i in range(8)] + [(9, 12, 101 * MiB), (10, 11, 2 * MiB)],
    # the same after one first block as large as the most they hold at a time
    # (model_runtime.beside_arena.caching_reserve, the arena executor's warm block)
    "growing-after-a-first-block": [(0, 1, 103 * MiB)] + [
        (s + 1, e + 1, n) for s, e, n in [(i, i + 2, (12 + 2 * i) * MiB) for i in range(8)]
        + [(9, 12, 101 * MiB), (10, 11, 2 * MiB)]],
}


@pytest.mark.gpu
@pytest.mark.parametrize("expandable_segments", [False, True], ids=["default", "expandable"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_simulation_matches_torch_reserved(name, expandable_segments):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from model_ir import Lifetime

    lts = CASES[name]
    sim = simulate_caching_allocator([Lifetime(f"b{i}", s, e, n) for i, (s, e, n) in enumerate(lts)],
                                     expandable_segments=expandable_segments)
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": f"expandable_segments:{expandable_segments}"}
    out = subprocess.run([sys.executable, "-c", REPLAY], input=json.dumps(lts), capture_output=True,
                         text=True, check=True, env=env)
    real = json.loads(out.stdout)
    assert sim.reserved_bytes == real["reserved"]
    assert sim.allocated_peak_bytes == real["allocated"]


@pytest.mark.gpu
@pytest.mark.parametrize("expandable_segments", [False, True], ids=["default", "expandable"])
def test_training_steps_match_torch_reserved_over_steps(expandable_segments):
    """The same step three times back to back: the second reserves a third segment
    (test_place_caching_allocator.py::test_a_later_step_can_reserve_more_than_the_first)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from model_ir import Lifetime

    from model_place import simulate_training_steps

    step = [(2, 3, 16 * MiB), (1, 4, 4 * MiB), (1, 4, 16 * MiB)]
    sim = simulate_training_steps((), [Lifetime(f"b{i}", s, e, n) for i, (s, e, n) in enumerate(step)],
                                  expandable_segments=expandable_segments)
    lts = [(s + 5 * k, e + 5 * k, n) for k in range(3) for s, e, n in step]
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": f"expandable_segments:{expandable_segments}"}
    out = subprocess.run([sys.executable, "-c", REPLAY], input=json.dumps(lts), capture_output=True,
                         text=True, check=True, env=env)
    assert sim.reserved_bytes == json.loads(out.stdout)["reserved"]
