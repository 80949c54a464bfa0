"""Where the arena executor's fallback results live: left to PyTorch's allocator until
their last use, or copied into the arena right after their op (``make_plan``'s
``fallback_results``); ``auto`` keeps whichever holds less beside the arena."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_ir import Schedule
from model_ir.testing.examples import random_topological_order
from model_ir.testing.strategies import graphs_with_unplaced
from model_runtime.beside_arena import copy_lifetimes, fallback_copies, fallback_cost
from model_runtime.errors import RuntimeLayerError
from model_runtime.planning import make_plan

ALIGN = {"cpu": 64, "cuda": 512}


@settings(max_examples=25, deadline=None)
@given(graphs_with_unplaced(), st.sampled_from(["cpu", "cuda"]))
def test_outside_and_copied_plans(case, device_type):
    graph, fallbacks = case
    outside, copied = (make_plan(graph, device_type=device_type, unplaced=fallbacks, fallback_results=way,
                                 time_limit=0.2) for way in ("outside", "copied"))
    assert not fallbacks & set(outside.placement.offsets)
    assert fallbacks <= set(copied.placement.offsets)
    assert outside.figures["fallback_copied_bytes"] == 0 == copied.figures["unplaced_bytes"]
    assert copied.figures["fallback_copied_bytes"] == sum(graph.buffer(b).size for b in fallbacks)
    # Two pools side by side (and the step outputs) never hold less than the transient
    # peak; one arena with the copies beside it neither.
    f = outside.figures
    assert f["arena_bytes"] + f["beside_arena_bytes"] + f["output_bytes"] >= f["transient_peak_bytes"]
    f = copied.figures
    assert f["beside_arena_bytes"] >= f["fallback_copy_bytes"]
    assert f["arena_bytes"] + f["beside_arena_bytes"] + f["output_bytes"] >= f["transient_peak_bytes"]


@settings(max_examples=40, deadline=None)
@given(graphs_with_unplaced(), st.sampled_from(["cpu", "cuda"]), st.randoms(use_true_random=False))
def test_fallback_copies_never_cost_more_than_none_or_all(case, device_type, rnd):
    graph, fallbacks = case
    order = random_topological_order(graph, seed=rnd.randrange(1000))
    align = ALIGN[device_type]
    chosen = fallback_copies(graph, order, align, fallbacks, device_type)
    cost = fallback_cost(graph, order, align, fallbacks, chosen, device_type)
    assert cost <= fallback_cost(graph, order, align, fallbacks, frozenset(), device_type)
    assert cost <= fallback_cost(graph, order, align, fallbacks, fallbacks, device_type)
    # all of an op's results or none; every op smaller than a copied one is copied
    groups = [set(op.outputs) & fallbacks for op in graph.ops if set(op.outputs) & fallbacks]
    assert all(g <= chosen or not g & chosen for g in groups)
    sizes = [(sum(graph.buffer(b).size for b in g), g <= chosen) for g in groups]
    assert all(c2 for s1, c1 in sizes if c1 for s2, c2 in sizes if s2 < s1)
    # make_plan's auto places such a choice (for its own order) and says so in its figures
    plan = make_plan(graph, device_type=device_type, unplaced=fallbacks, time_limit=0.2)
    placed = fallbacks & set(plan.placement.offsets)
    assert all(g <= placed or not g & placed for g in groups)
    assert plan.figures["fallback_copied_bytes"] == sum(graph.buffer(b).size for b in placed)
    assert plan.figures["unplaced_bytes"] == sum(graph.buffer(b).size for b in fallbacks - placed)


def _every_threshold(graph, order, align, fallbacks, device_type, expandable):
    """fallback_copies as it was before its bound: the allocator replayed for every
    threshold (the reference the pruned search must equal)."""
    from model_runtime.beside_arena import fallback_groups

    groups = fallback_groups(graph, fallbacks)
    if not groups:
        return frozenset()
    size = {op: sum(graph.buffer(b).size for b in bs) for op, bs in groups.items()}
    best = None
    for threshold in sorted(set(size.values())) + [float("inf")]:
        copied = frozenset(b for op, bs in groups.items() if size[op] < threshold for b in bs)
        key = (fallback_cost(graph, order, align, fallbacks, copied, device_type, expandable=expandable),
               sum(graph.buffer(b).size for b in copied))
        if best is None or key < best[0]:
            best = key, copied
    return best[1]


@settings(max_examples=60, deadline=None)
@given(st.one_of(graphs_with_unplaced(max_ops=12, max_size=200_000), graphs_with_unplaced(max_ops=12,
                                                                                         max_size=40 << 20)),
       st.sampled_from(["cpu", "cuda"]), st.booleans(), st.randoms(use_true_random=False))
def test_the_bounded_search_finds_what_trying_every_threshold_finds(case, device_type, expandable, rnd):
    """fallback_copies replays the allocator best bound first and stops where no bound
    can win: the same choice as replaying it for every threshold, and each bound is
    at most its cost (buffers of bytes and of tens of MiB: both pools)."""
    graph, fallbacks = case
    order = random_topological_order(graph, seed=rnd.randrange(1000))
    align = ALIGN[device_type]
    assert fallback_copies(graph, order, align, fallbacks, device_type, expandable=expandable) == \
        _every_threshold(graph, order, align, fallbacks, device_type, expandable)
    for copied in (frozenset(), fallbacks):
        assert fallback_cost(graph, order, align, fallbacks, copied, device_type, expandable=expandable,
                             bound_only=True) <= \
            fallback_cost(graph, order, align, fallbacks, copied, device_type, expandable=expandable)


def test_copy_lifetimes_are_one_step_per_run_of_each_fallback():
    from model_ir.testing.examples import training_chain

    graph = training_chain(3, size=100)  # f0 f1 f2 b2 b1 b0 update
    order = Schedule([op.id for op in graph.ops])
    lts = copy_lifetimes(graph, order, 64, frozenset({"a1", "g2"}))
    assert [(lt.id, lt.start, lt.end, lt.size) for lt in lts] == [("a1@1", 1, 2, 100), ("g2@3", 3, 4, 1)]
    assert copy_lifetimes(graph, order, 64, frozenset()) == []


def test_fallback_results_is_checked():
    from model_ir.testing.examples import training_chain

    with pytest.raises(RuntimeLayerError, match="fallback_results must be one of auto, outside, copied"):
        make_plan(training_chain(2), fallback_results="inside")


def test_saved_copied_plan_runs_copied(tmp_path):
    """A saved plan that places the fallbacks' results keeps copying them; its figures
    are recomputed as such."""
    torch = pytest.importorskip("torch")
    from model_ir import save_plan
    from model_ir.testing.torch_models import small_cnn
    from model_runtime import optimize
    from model_runtime.lowering import fallback_buffers

    torch.manual_seed(0)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 16, 16)
    step = optimize(model, x, optimizer=opt, time_limit=0.5, executor="arena")
    plan = make_plan(step.captured.graph, unplaced=fallback_buffers(step.captured, "cpu"),
                     fallback_results="copied", time_limit=0.5)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    again = optimize(model, x, optimizer=opt, plan=str(path), executor="arena")
    f = again.figures()
    assert f["fallback_copied_bytes"] > 0 == f["unplaced_bytes"]
    assert f["fallback_copy_bytes"] == plan.figures["fallback_copy_bytes"] == f["scratch_peak_bytes"]
    assert all(fb.copied for fb in again.fallbacks)
    assert "copied into the arena" in again.report()
    again(x)


def test_a_cuda_plan_counts_the_library_workspaces_beside_the_arena(monkeypatch):
    """cuBLAS's workspace (kept) and cuDNN's convolution workspaces (during each call)
    come from the caching allocator beside the arena: a CUDA plan's beside_arena_bytes
    holds them (captured for CUDA on this machine: emulated kernels, Hopper's sizes)."""
    torch = pytest.importorskip("torch")
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import capture_step
    from model_runtime.lowering import fallback_buffers
    from model_runtime.beside_arena import workspace_lifetimes

    MiB = 1 << 20
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def plan_for(device):
        cap = capture_step(model, torch.randn(4, 3, 16, 16), optimizer=opt, device=device,
                           granularity=512 if device == "cuda" else 64)
        return make_plan(cap.graph, device_type=device, unplaced=fallback_buffers(cap, device), time_limit=0.5)

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    plan = plan_for("cuda")
    kept, step = workspace_lifetimes(plan.graph, plan.schedule)
    assert [lt.size for lt in kept] == [32 * MiB]  # one cuBLAS workspace: every op on one thread
    assert step and all(plan.graph.op(lt.id.split(":")[1].split("@")[0]).target.startswith("aten.convolution")
                        for lt in step)
    f = plan.figures
    assert f["library_workspace_bytes"] >= 32 * MiB + max(lt.size for lt in step)
    assert f["beside_arena_bytes"] >= f["library_workspace_bytes"]
    # a graph holding them as buffers already (model-bench's) does not count them twice
    from model_ir.workspaces import with_workspaces
    assert workspace_lifetimes(with_workspaces(plan.graph), plan.schedule) == (kept, [])
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":1024:2")
    assert [lt.size for lt in workspace_lifetimes(plan.graph, plan.schedule)[0]] == [2 * MiB]
    # no library workspace; batch norm backward's second input gradient, BLAS's clones of
    # the classifier's expanded output gradient (the default loss sums the output), and the
    # convolutions' and batch norms' temporaries (measured at capture)
    cpu = plan_for("cpu")
    kept, step = workspace_lifetimes(cpu.graph, cpu.schedule)
    measured = {"aten.convolution.default", "aten.convolution_backward.default", "aten.native_batch_norm.default"}
    targets = [(cpu.graph.op(lt.id.split(":")[1].split("@")[0]).target, lt.size) for lt in step]
    assert sorted(t for t, size in targets if t in measured and size) == sorted([*measured] * 2)
    others = sorted(size for t, size in targets if t not in measured)
    # (and batch norms' num_batches_tracked.add_(1): the 1 wrapped in an int64 tensor)
    assert kept == [] and others == [8] * 2 + [4 * 10 * 4] * 2 + [4 * 8 * 16 * 16 * 4] * 2
    assert cpu.figures["library_workspace_bytes"] >= 4 * 8 * 16 * 16 * 4


def test_optimize_takes_where_fallback_results_live():
    torch = pytest.importorskip("torch")
    from model_ir.testing.torch_models import small_cnn
    from model_runtime import optimize

    x = torch.randn(4, 3, 16, 16)
    steps = {}
    for way in ("copied", "outside"):
        torch.manual_seed(0)
        model = small_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        steps[way] = optimize(model, x, optimizer=opt, time_limit=0.5, executor="arena", fallback_results=way)
    assert steps["copied"].fallbacks and all(f.copied for f in steps["copied"].fallbacks)
    assert steps["outside"].fallbacks and not any(f.copied for f in steps["outside"].fallbacks)
    for _ in range(2):
        assert torch.equal(steps["copied"](x), steps["outside"](x))
    with pytest.raises(RuntimeLayerError, match="fallback_results must be one of"):
        optimize(model, x, optimizer=opt, fallback_results="inside")
    with pytest.raises(RuntimeLayerError, match="executor 'reorder' does not copy"):
        optimize(model, x, optimizer=opt, executor="reorder", fallback_results="copied")


def test_copied_into_copies_bytes_and_keeps_a_result_larger_than_its_slot():
    torch = pytest.importorskip("torch")
    from model_runtime.program import _copied_into

    arena = torch.zeros(64, dtype=torch.uint8)
    base = torch.arange(6, dtype=torch.float32)
    view = base[1:5:2]  # strided, offset: the storage up to its last element is copied, the view kept
    grad, none, other = _copied_into((view, None, base), [arena[16:48], None, None], "op")
    assert none is None and other is base
    assert grad.untyped_storage().data_ptr() == arena.untyped_storage().data_ptr()
    assert torch.equal(grad, view) and grad.stride() == view.stride()
    assert torch.equal(arena[16:32].view(torch.float32), base[:4]) and not arena[32:].any()
    with pytest.warns(RuntimeWarning, match="op conv returned a result of 24 bytes, more than the 16"):
        kept = _copied_into(base, [arena[:16]], "conv")
    assert kept is base
    # A reduced loss keeps the storage its kernel resized for the unreduced one (binary
    # cross-entropy at 32x64: 8 KiB): its 4 bytes go to its slot.
    loss = torch.ops.aten.binary_cross_entropy(torch.rand(32, 64), torch.rand(32, 64))
    assert loss.untyped_storage().nbytes() == 32 * 64 * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copied = _copied_into(loss, [arena[48:52]], "binary_cross_entropy")
    assert torch.equal(copied, loss) and copied.untyped_storage().data_ptr() == arena.untyped_storage().data_ptr()


def test_a_first_block_stops_growing_requests_from_leaving_a_segment_each():
    from model_ir import Lifetime
    from model_runtime.beside_arena import caching_allocator_bytes, caching_reserve

    MiB = 1 << 20
    growing = [Lifetime(f"w{i}", i, i + 1, (30 + 30 * i) * MiB) for i in range(3)]  # 30, 60, 90 MiB in turn
    assert caching_allocator_bytes(growing) == 180 * MiB  # a new segment for each larger one
    assert caching_reserve(growing) == (90 * MiB, 90 * MiB)
    same = [Lifetime(f"w{i}", i, i + 1, 90 * MiB) for i in range(3)]
    assert caching_reserve(same) == (90 * MiB, 0)  # nothing to gain: no first block
    small = [Lifetime(f"s{i}", i, i + 1, 1000 * (i + 1)) for i in range(3)]  # small pool only
    assert caching_reserve(small)[1] == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(1, 4), st.integers(1, 64)), min_size=1, max_size=12),
       st.lists(st.integers(1, 64), max_size=2))
def test_caching_reserve_never_reserves_more_than_without_a_first_block(step, kept):
    from model_ir import Lifetime
    from model_runtime.beside_arena import caching_allocator_bytes, caching_reserve

    MiB = 1 << 20
    step = [Lifetime(f"s{i}", t, t + d, n * MiB // 2) for i, (t, d, n) in enumerate(step)]
    kept = [Lifetime(f"k{i}", 0, 13, n * MiB // 2) for i, n in enumerate(kept)]
    reserved, warm = caching_reserve(step, kept)
    assert reserved <= caching_allocator_bytes(step, kept)
    if warm:
        assert reserved >= warm >= max(lt.size for lt in (*step, *kept))


def test_a_warm_block_starts_the_step():
    """The arena executor's first block (CUDA plans) is the generated step's first call;
    without the memory for it the step runs on."""
    torch = pytest.importorskip("torch")
    from model_ir.testing.torch_models import mlp
    from model_runtime import optimize
    from model_runtime.program import _allocate_and_free, build_program

    model = mlp(8, 2)
    step = optimize(model, torch.randn(4, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    executor="reorder", time_limit=0.2)
    program = build_program(step.captured, step.plan.schedule, device_type="cpu", warm_block=(1 << 20, "cpu"))
    first = next(n for n in program.module.graph.nodes if n.op == "call_function")
    assert first.target is _allocate_and_free and first.args == (1 << 20, "cpu")
    _allocate_and_free(1 << 62, "cpu")  # no memory for it: no error



def test_the_first_block_is_for_cuda_steps():
    torch = pytest.importorskip("torch")
    from model_ir import Plan

    from model_runtime.executors import _warm_block

    plan = Plan(None, Schedule([]), None, {"warm_block_bytes": 1 << 20})
    assert _warm_block(plan, torch.device("cuda")) == (1 << 20, "cuda")
    assert _warm_block(plan, torch.device("cpu")) is None
    assert _warm_block(Plan(None, Schedule([]), None, {}), torch.device("cuda")) is None


def test_host_results_are_never_copied_into_the_arena():
    """Efficient attention's philox seed and offset live in host memory on CUDA (0 device
    bytes in the capture): a copy into a 0-byte slot would warn every step."""
    from model_ir.graph import Buffer, Graph, Op
    from model_runtime.planning import copied_fallbacks

    graph = Graph([Buffer("out", 4096), Buffer("seed", 0, meta={"host": True})],
                  [Op("attn", outputs=["out", "seed"]), Op("use", inputs=["out", "seed"])])
    for mode in ("copied", "auto"):
        assert "seed" not in copied_fallbacks(mode, graph, ("attn", "use"), 512, {"out", "seed"}, "cuda")
    assert copied_fallbacks("copied", graph, ("attn", "use"), 512, {"out", "seed"}, "cuda") == {"out"}
