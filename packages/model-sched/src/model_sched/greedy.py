"""Baseline orders: eager program order, eager with the optimizer step fused into
backward, and the greedy memory-aware topological sorts of PyTorch's compiler
(``torch/_inductor/memory.py``: LPMF, BFS, DFS).

All run in O((ops + uses) log ops) with heaps, so they stay fast on graphs with
tens of thousands of ops.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from model_ir.graph import Graph
from model_sched.liveness import Liveness

#: How many candidates LPMF inspects when looking for the least ``mem2`` among the
#: ops that fit under the peak so far; bounds the per-step cost on very wide graphs.
LPMF_SCAN = 64


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
    """Least-peak-memory-first (inductor's ``topological_sort_lpmf``).

    For each ready op, ``mem1`` is the live bytes while it runs and ``mem2`` the
    live bytes after it frees its last-used inputs. If some ready op keeps
    ``mem1`` under the peak so far, pick the one with the least ``mem2``;
    otherwise pick the least ``mem1``. Ties go to program order.
    """
    n = lv.n_ops
    sizes, keep, users = lv.sizes, lv.keep, lv.users
    remaining = list(lv.n_users)
    indeg = [len(p) for p in lv.preds]
    done = [False] * n
    ready = [False] * n
    version = [0] * n
    free = [0] * n  # bytes an op frees if run now

    def freed_now(v: int) -> int:
        f = 0
        for b in lv.op_uses[v]:
            if remaining[b] == 1 and not keep[b]:
                f += sizes[b]
        for b in lv.op_outs[v]:
            if remaining[b] == 0 and not keep[b]:
                f += sizes[b]
        return f

    by_mem1: list[tuple[int, int]] = []
    by_mem2: list[tuple[int, int, int]] = []

    def push(v: int) -> None:
        free[v] = freed_now(v)
        version[v] += 1
        heapq.heappush(by_mem2, (lv.out_bytes[v] - free[v], v, version[v]))

    for v in range(n):
        if indeg[v] == 0:
            ready[v] = True
            heapq.heappush(by_mem1, (lv.out_bytes[v], v))
            push(v)
    mem, max_mem = lv.base_bytes, 0
    order: list[int] = []
    while len(order) < n:
        while done[by_mem1[0][1]]:
            heapq.heappop(by_mem1)
        room = max_mem - mem
        pick = -1
        if by_mem1[0][0] <= room:
            held = []
            for _ in range(LPMF_SCAN):
                if not by_mem2:
                    break
                entry = heapq.heappop(by_mem2)
                _, v, ver = entry
                if done[v] or ver != version[v]:
                    continue
                held.append(entry)
                if lv.out_bytes[v] <= room:
                    pick = v
                    break
            for entry in held:
                heapq.heappush(by_mem2, entry)
        if pick < 0:
            pick = by_mem1[0][1]
        v = pick
        done[v] = True
        order.append(v)
        mem += lv.out_bytes[v]
        max_mem = max(max_mem, mem)
        if len(order) == 1:
            mem -= lv.first_free_bytes
        for b in lv.op_uses[v]:
            remaining[b] -= 1
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
            elif remaining[b] == 1:
                # the last remaining user now frees b: refresh its key if it is ready
                for u in users[b]:
                    if not done[u]:
                        if ready[u]:
                            push(u)
                        break
        for b in lv.op_outs[v]:
            if remaining[b] == 0 and not keep[b]:
                mem -= sizes[b]
        for s in lv.succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready[s] = True
                heapq.heappush(by_mem1, (lv.out_bytes[s], s))
                push(s)
    return order


def bfs_order(lv: Liveness) -> list[int]:
    """BFS by input age (inductor's ``topological_sort_bfs``).

    A ready op's priority is the steps at which its predecessors ran, latest first;
    the op whose predecessors ran earliest goes next (FIFO), which keeps the
    buffers it reads short-lived.
    """
    n = lv.n_ops
    indeg = [len(p) for p in lv.preds]
    step = [0] * n
    heap: list[tuple[tuple[int, ...], int]] = []
    for v in range(n):
        if indeg[v] == 0:
            heap.append(((), v))
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        step[v] = len(order)
        order.append(v)
        for s in lv.succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                key = tuple(sorted((step[p] for p in lv.preds[s]), reverse=True)[:4])
                heapq.heappush(heap, (key, s))
    return order


def dfs_order(lv: Liveness) -> list[int]:
    """DFS by size (inductor's ``topological_sort_dfs``).

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
