"""Baseline orders: eager program order, eager with the optimizer step fused into
backward, and the greedy memory-aware topological sorts of PyTorch's compiler
(``torch/_inductor/memory.py``: LPMF, BFS, DFS).

The three sorts are ports: on the same graph they give the order Inductor's
functions give, tie-breaking included (``tests/model_sched/test_sched_inductor_parity.py``
runs Inductor's own code through ``model_sched.testing_inductor``). Inductor's
versions take O(ops) per step (LPMF) or sort per visit; these use heaps and a
segment tree, O((ops + uses) log ops), so they stay fast on graphs with tens of
thousands of ops.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

from model_ir.graph import Graph
from model_sched.liveness import Liveness

def program_order(lv: Liveness) -> list[int]:
    """The eager order: ops as listed."""
    return list(range(lv.n_ops))


def optimizer_ops(graph: Graph) -> list[bool]:
    """For each op, whether it belongs to the optimizer step (``meta["phase"]`` set by capture)."""
    return [op.meta.get("phase") == "optimizer" for op in graph.ops]


def optimizer_in_backward_order(lv: Liveness, updates: Sequence[bool]) -> list[int]:
    """Program order with each optimizer op moved up to the first point it can run.

    This models PyTorch's "optimizer step in backward" recipe
    (``Tensor.register_post_accumulate_grad_hook`` with one optimizer per
    parameter): a parameter is updated as soon as its gradient is complete and no
    later backward op reads the parameter, and the gradient is freed right after.
    The recipe's hook fires once the whole autograd node that produced the gradient
    has run, at or after this point, so the order's peak is at most the recipe's
    (equal for SGD; tests/model_ir/test_capture_memory.py measures both): a baseline
    that errs low. The other ops (``updates[v]`` false) keep their program order;
    ready updates run in program order after each of them.
    """
    missing = [len(p) for p in lv.preds]
    ready = [v for v in range(lv.n_ops) if updates[v] and not missing[v]]
    heapq.heapify(ready)
    order: list[int] = []

    def run(v: int) -> None:
        order.append(v)
        for s in lv.succs[v]:
            missing[s] -= 1
            if not missing[s] and updates[s]:
                heapq.heappush(ready, s)

    # Program order is topological, so when an op's turn comes every update it depends on
    # has become ready and run in an earlier drain.
    for v in [None, *(v for v in range(lv.n_ops) if not updates[v])]:
        if v is not None:
            run(v)
        while ready:
            run(heapq.heappop(ready))
    return order


def lpmf_order(lv: Liveness) -> list[int]:
    """Least-peak-memory-first: Inductor's ``topological_sort_lpmf``, same order.

    Each ready op has ``size`` (bytes it allocates) and ``mem2 = size - freed``
    (``freed``: bytes it frees, its inputs it is the last user of and its outputs
    nobody reads). An op *fits* if ``size`` is at most the gap between the peak so
    far and the live bytes. If some ready op fits, run the one with the least
    ``(mem2, index)`` among those; otherwise the least ``(size, mem2, index)``.
    Like Inductor, the live bytes count the graph inputs some op uses (not the
    persistent buffers nor unused inputs, which shift every step alike) and the
    peak so far starts at ``max(live inputs, bytes of the outputs)``, a lower bound.
    (Inductor's other rule, picking by successor index when every ready op is
    larger than ``config.size_threshold_for_succ_based_strategy``, is off by default
    and not ported.)

    Ops sit in a segment tree in ``(size, index)`` order holding ``(mem2, index)``
    of the ready ones, so "least among the ops that fit" is a prefix minimum and
    "least among the smallest" a range minimum: O((ops + uses) log ops).
    """
    n = lv.n_ops
    if n == 0:
        return []
    sizes, keep, users, out_bytes = lv.sizes, lv.keep, lv.users, lv.out_bytes
    remaining = list(lv.n_users)
    indeg = [len(p) for p in lv.preds]
    done = [False] * n
    ready = [False] * n
    free = [0] * n  # bytes an op frees if run now (valid while ready)

    by_size = sorted(range(n), key=lambda v: (out_bytes[v], v))
    sorted_sizes = [out_bytes[v] for v in by_size]
    pos = [0] * n
    for i, v in enumerate(by_size):
        pos[v] = i
    # keys are mem2 * n + index with |mem2| <= total bytes < 2**62
    empty = 2**63 * (n + 1)
    tree = MinTree(n, empty)

    def freed_now(v: int) -> int:
        f = 0
        for b in lv.op_uses[v]:
            if remaining[b] == 1 and not keep[b]:
                f += sizes[b]
        for b in lv.op_outs[v]:
            if remaining[b] == 0 and not keep[b]:
                f += sizes[b]
        return f

    def offer(v: int) -> None:
        free[v] = freed_now(v)
        # (mem2, index) as one int: mem2 * n + index orders as the pair does
        tree.set(pos[v], (out_bytes[v] - free[v]) * n + v)

    smallest: list[tuple[int, int]] = []  # (size, index) of ready ops, lazily pruned
    for v in range(n):
        if indeg[v] == 0:
            ready[v] = True
            heapq.heappush(smallest, (out_bytes[v], v))
            offer(v)
    live = outputs = 0
    for b in range(len(sizes)):
        if lv.persistent[b] or (lv.producer[b] < 0 and not lv.n_users[b]):
            continue  # Inductor knows neither parameters nor inputs nobody reads
        if lv.producer[b] < 0:
            live += sizes[b]
        if keep[b]:
            outputs += sizes[b]
    max_mem = max(live, outputs)
    order: list[int] = []
    while len(order) < n:
        k = bisect.bisect_right(sorted_sizes, max_mem - live)
        best = tree.min(0, k)
        if best == empty:
            while done[smallest[0][1]]:
                heapq.heappop(smallest)
            least = smallest[0][0]
            best = tree.min(bisect.bisect_left(sorted_sizes, least), bisect.bisect_right(sorted_sizes, least))
        v = best % n
        done[v] = True
        tree.set(pos[v], empty)
        order.append(v)
        live += out_bytes[v]
        max_mem = max(max_mem, live)
        live -= free[v]
        for b in lv.op_uses[v]:
            remaining[b] -= 1
            if remaining[b] == 1 and not keep[b]:
                # the last remaining user now frees b: refresh its key if it is ready
                for u in users[b]:
                    if not done[u]:
                        if ready[u]:
                            offer(u)
                        break
        for s in lv.succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready[s] = True
                heapq.heappush(smallest, (out_bytes[s], s))
                offer(s)
    return order


class MinTree:
    """Minimum over ranges of ``n`` ints with point updates (iterative segment tree);
    ``empty`` (larger than every value) marks a position holding nothing."""

    def __init__(self, n: int, empty: int) -> None:
        self.size = 1 << max(n - 1, 0).bit_length()
        self.empty = empty
        self.data = [empty] * (2 * self.size)

    def set(self, i: int, value: int) -> None:
        data = self.data
        i += self.size
        data[i] = value
        i >>= 1
        while i:
            a, b = data[2 * i], data[2 * i + 1]
            m = a if a <= b else b
            if data[i] == m:
                break  # the ancestors hold what they held
            data[i] = m
            i >>= 1

    def leftmost_at_most(self, threshold: int) -> int:
        """The least position whose value is at most ``threshold``, or -1."""
        data = self.data
        if data[1] > threshold:
            return -1
        i = 1
        while i < self.size:
            i = 2 * i if data[2 * i] <= threshold else 2 * i + 1
        return i - self.size

    def min(self, lo: int, hi: int) -> int:
        """Least value among positions ``lo <= i < hi`` (``empty`` if none)."""
        data, best = self.data, self.empty
        lo += self.size
        hi += self.size
        while lo < hi:
            if lo & 1:
                if data[lo] < best:
                    best = data[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if data[hi] < best:
                    best = data[hi]
            lo >>= 1
            hi >>= 1
        return best


def bfs_order(lv: Liveness) -> list[int]:
    """BFS by input age: Inductor's ``topological_sort_bfs``, same order.

    A ready op's priority is the steps at which its predecessors ran, ascending,
    compared as sequences (a prefix first); the least goes next, ties to program
    order. Ops whose inputs were made earliest run first (FIFO), which keeps the
    buffers they read short-lived. O((ops + edges) log ops) heap operations; a
    comparison reads the two step sequences up to their first difference.
    """
    n = lv.n_ops
    indeg = [len(p) for p in lv.preds]
    step = [0] * n
    heap: list[tuple[tuple[int, ...], int]] = [((), v) for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        step[v] = len(order)
        order.append(v)
        for s in lv.succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (tuple(sorted(step[p] for p in lv.preds[s])), s))
    return order


def dfs_order(lv: Liveness) -> list[int]:
    """DFS by size: Inductor's ``topological_sort_dfs``, same order.

    Each op's priority is the bytes it reads and writes; ops are visited in
    ascending priority, each after its predecessors (also in ascending priority).
    """
    n = lv.n_ops
    prio = [lv.out_bytes[v] + sum(lv.sizes[b] for b in lv.op_uses[v]) for v in range(n)]
    key = lambda v: (prio[v], v)  # noqa: E731
    sorted_preds = [sorted(p, key=key, reverse=True) for p in lv.preds]
    visited = [False] * n
    order: list[int] = []
    for root in sorted(range(n), key=key):
        if visited[root]:
            continue
        # iterative post-order; predecessors are pushed largest-first so the smallest is visited first
        stack = [(root, False)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
                continue
            if visited[v]:
                continue
            visited[v] = True
            stack.append((v, True))
            for p in sorted_preds[v]:
                if not visited[p]:
                    stack.append((p, False))
    return order
