"""The compiled search core: deep recursion, cancellation, statuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

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


def test_cancel_stops_a_running_search():
    # A chain of 30000 buffers: each search node orders every unplaced buffer, so
    # placing them all takes far longer than the 0.2 s before the cancel.
    n = 30000
    lo, up = list(range(n)), [i + 5 for i in range(n)]
    result = {}

    def run():
        result["out"] = _search.solve(lo, up, [8] * n, [1] * n, 40, 60.0)

    t = threading.Thread(target=run)
    t0 = time.perf_counter()
    t.start()
    time.sleep(0.2)
    _search.cancel()
    t.join(30)
    status, offsets, nodes, _ = result["out"]
    assert status == "interrupted" and offsets is None
    assert 0 < nodes < n
    assert time.perf_counter() - t0 < 10
