"""The compiled search core: deep recursion, cancellation, statuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from model_ir import Lifetime

from model_place import _search
from model_place.exact import decide

DEEP = textwrap.dedent("""
    import resource, sys
    from model_ir import Lifetime
    from model_place.exact import decide
    from model_place import validate_placement
    # A chain of 3000 overlapping buffers: the search nests one level per buffer.
    lts = [Lifetime(str(i), i, i + 5, 8) for i in range(3000)]
    status, offsets, _ = decide(lts, 40, 60)
    validate_placement(lts, offsets, 40)
    print(status)
""")


def _small_stack():
    import resource

    resource.setrlimit(resource.RLIMIT_STACK, (256 << 10, resource.RLIM_INFINITY))


def test_deep_search_survives_a_small_main_thread_stack():
    # The main thread gets only 256 KiB of stack; the search runs in its own thread.
    out = subprocess.run([sys.executable, "-c", DEEP], capture_output=True, text=True, timeout=120,
                         preexec_fn=_small_stack)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "found"


def test_statuses():
    lts = [Lifetime("a", 0, 2, 4), Lifetime("b", 1, 3, 4), Lifetime("c", 0, 3, 4)]
    assert decide(lts, 12, None)[0] == "found"
    status, offsets, stats = decide(lts, 11, None)
    assert status == "infeasible" and offsets is None
    assert decide([], 0, None) == ("found", {}, {"nodes": 0, "backtracks": 0})


def _cancelled_after(delay: float, function, *args):
    """Run ``function(*args)`` in a thread, call ``_search.cancel()`` after ``delay``
    seconds; its result and the seconds until it returned."""
    result = {}
    t = threading.Thread(target=lambda: result.update(out=function(*args)))
    t0 = time.perf_counter()
    t.start()
    time.sleep(delay)
    _search.cancel()
    t.join(30)
    return result["out"], time.perf_counter() - t0


def test_cancel_stops_a_running_search():
    # A chain of 30000 buffers: each search node orders every unplaced buffer, so
    # placing them all takes far longer than the 0.2 s before the cancel.
    n = 30000
    lo, up = list(range(n)), [i + 5 for i in range(n)]
    (status, offsets, nodes, _), seconds = _cancelled_after(0.2, _search.solve, lo, up, [8] * n, [1] * n, 40, 60.0)
    assert status == "interrupted" and offsets is None
    assert 0 < nodes < n
    assert seconds < 10


def test_cancel_stops_running_dives_and_bad_arguments_are_refused():
    from model_place.hard_instances import zero_slack_instance

    lts = zero_slack_instance(1000, seed=5)
    args = ([lt.start + 1 for lt in lts], [lt.end + 1 for lt in lts], [lt.size for lt in lts], [1] * len(lts),
            2 * len(lts), 1 << 40, 0, 7, 1 << 62, -1.0)  # no dive reaches goal 0, no time limit
    (arena, offsets, dives, interrupted), seconds = _cancelled_after(0.3, _search.skyline, *args)
    assert interrupted and seconds < 10
    assert offsets is not None and arena < 1 << 40 and dives >= 1  # the best dive before the cancel
    with pytest.raises(ValueError, match="buffer 0"):
        _search.skyline([2], [2], [8], [1], 3, 100, 0, 0, 1, 1.0)  # start == end
    with pytest.raises(ValueError, match="buffer 0"):
        _search.skyline([1], [5], [8], [1], 3, 100, 0, 0, 1, 1.0)  # end past nsteps + 1
