"""The executors on a real CUDA GPU (``uv run pytest -m gpu tests/model_runtime``).

What fails only on CUDA: kernels the capture cannot see (cuDNN batch norm, fused
attention returning host tensors, out= kernels that misbehave) and the memory PyTorch's
caching allocator really reserves. Each case runs in a fresh process
(``model_runtime.measured_runs``), so a crash is a test failure, not the end of the run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")

from model_ir.plugins import providers  # noqa: E402
from model_runtime.measured_runs import planned_device_bytes, spawn_variant  # noqa: E402

pytestmark = pytest.mark.gpu

#: small zoo cases that reach the CUDA-only paths: BatchNorm (cudnn_batch_norm),
#: memory-efficient attention (philox seed and offset on the host), plain convolutions
CASES = [("resnet18", 4), ("mobilenet_v2", 4), ("bert-tiny", 2), ("gpt2-tiny", 2), ("alexnet", 4)]
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _needs_cuda_and_zoo():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if "resnet18" not in providers("model_opt_models"):
        pytest.skip("needs the model-bench zoo")


def _run(model, batch, *runs):
    """Each ``(variant, allocator setting)`` of ``runs`` in its own process, concurrently
    (memory figures are per process; times are not compared here)."""
    spec = {"model": model, "mode": "train", "batch_size": batch, "optimizer": "sgd", "device": "cuda",
            "steps": 3, "warmup": 2, "time_limit": 5}
    with ThreadPoolExecutor(len(runs)) as pool:
        got = list(pool.map(lambda r: spawn_variant({**spec, "variant": r[0]}, r[1], timeout=300), runs))
    for (variant, alloc), g in zip(runs, got):
        assert "error" not in g, f"{variant} ({alloc}): {g['error']}"
    return got


@pytest.mark.parametrize("model,batch", CASES)
def test_arena_runs_with_eager_loss_and_planned_memory(model, batch):
    eager, arena = _run(model, batch, ("eager", "default"), ("arena", "default"))
    assert arena["losses"][0] == eager["losses"][0]  # same kernels, same first step
    plan = arena["plan"]
    # Planning keeps the arena and allocates nothing else.
    assert arena["planning_peak_bytes"] <= plan["arena_bytes"] + MiB
    # Steady state: persistent + arena + what the plan leaves to PyTorch's allocator,
    # plus the libraries' workspaces (cuBLAS/cuDNN: measured < 70 MiB on an H200).
    assert arena["max_reserved_bytes"] <= 1.02 * planned_device_bytes(arena) + 70 * MiB


@pytest.mark.parametrize("model,batch", CASES)
def test_reorder_reserves_no_more_than_eager(model, batch):
    allocs = ("default", "expandable")
    got = _run(model, batch, *[(v, a) for a in allocs for v in ("eager", "reorder")])
    for alloc, (eager, reorder) in zip(allocs, (got[:2], got[2:])):
        assert reorder["losses"][0] == eager["losses"][0]
        assert reorder["max_reserved_bytes"] <= eager["max_reserved_bytes"] * 1.02 + 2 * MiB, alloc


@pytest.mark.parametrize("model,batch", CASES)
def test_auto_picks_the_executor_that_reserves_less(model, batch):
    """``executor="auto"`` (the default) runs what the plan's figures say holds less,
    simulated in the allocator setting of the run: measured, that is the least of the
    executors it chooses from (2% + 2 MiB), with either setting."""
    from model_runtime.beside_arena import CHOICES, least_memory_executor

    allocs = ("default", "expandable")
    got = _run(model, batch, *[(v, a) for a in allocs for v in CHOICES])
    for k, alloc in enumerate(allocs):
        runs = dict(zip(CHOICES, got[k * len(CHOICES):(k + 1) * len(CHOICES)]))
        assert runs["arena"]["plan"].get("expandable_segments") == (alloc == "expandable")
        measured = {executor: run["max_reserved_bytes"] for executor, run in runs.items()}
        chosen = least_memory_executor(runs["arena"]["plan"])
        assert measured[chosen] <= min(measured.values()) * 1.02 + 2 * MiB, (alloc, chosen, measured)


class _DropoutMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_cuda_graph_replays_eager_steps(executor):
    """Recorded on the second call, replayed after, recorded again when lr changes: the
    losses (with dropout, drawn from the default generator) and the state are eager's."""
    import copy

    from model_ir.testing.torch_models import assert_same_state, eager_step
    from model_runtime import optimize

    torch.manual_seed(0)
    model = _DropoutMLP().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref, ref_opt = copy.deepcopy((model, opt))
    y = torch.randint(0, 10, (32,), device="cuda")
    loss_fn = torch.nn.functional.cross_entropy
    step = optimize(model, torch.randn(32, 64, device="cuda"), optimizer=opt, loss_fn=loss_fn, targets=(y,),
                    executor=executor, cuda_graph=True, time_limit=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=4, gamma=0.5)
    got, want = [], []
    for i in range(6):
        x = torch.randn(32, 64, device="cuda")
        torch.manual_seed(100 + i)
        got.append(step(x, targets=(y,)))
        torch.manual_seed(100 + i)
        want.append(eager_step(ref, ref_opt, (x,), loss_fn, (y,)))
        sched.step()
        ref_sched.step()
    assert [float(a) for a in got] == [float(b) for b in want]
    assert_same_state(model, opt, ref, ref_opt)
    assert step.graphed.recordings == 2


def test_cuda_graph_refuses_adam_without_capturable():
    from model_runtime import RuntimeLayerError, optimize

    model = torch.nn.Linear(8, 4).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(RuntimeLayerError, match="capturable=True"):
        optimize(model, torch.randn(2, 8, device="cuda"), optimizer=opt, cuda_graph=True, time_limit=1)


@pytest.mark.parametrize("model,batch", [("bert-tiny", 2), ("resnet18", 4)])
def test_cuda_graph_zoo_losses_are_eager(model, batch):
    eager, graphed = _run(model, batch, ("eager", "default"), ("arena+graph", "default"))
    assert graphed["losses"] == eager["losses"]
    assert graphed["cuda_graph_recordings"] == 1


def test_copied_fallbacks_on_cuda_give_the_same_steps():
    """Fallback results (cuDNN convolutions and batch norm) copied into the arena give
    the losses of the same plan that leaves them outside (deterministic cuDNN)."""
    from model_ir.testing.torch_models import small_cnn
    from model_runtime import optimize

    losses = {}
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        for way in ("outside", "copied"):
            torch.manual_seed(0)
            model = small_cnn().cuda()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            x = torch.randn(8, 3, 32, 32, device="cuda")
            step = optimize(model, x, optimizer=opt, time_limit=1, executor="arena", fallback_results=way)
            assert any(f.copied for f in step.fallbacks) == (way == "copied")
            losses[way] = [step(x).item() for _ in range(3)]
    finally:
        torch.backends.cudnn.deterministic = deterministic
    assert losses["outside"] == losses["copied"]
    assert len(set(losses["copied"])) > 1


def test_a_cuda_capture_runs_no_cpu_kernel_to_measure():
    """CPU kernels' temporaries are measured at capture by running each distinct call on
    the CPU (``model_ir.torch.kernel_probes``); a capture on the GPU measures none."""
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import kernel_probes
    from model_runtime import optimize

    kernel_probes._measured.clear()
    torch.manual_seed(0)
    model = small_cnn().cuda()
    step = optimize(model, torch.randn(4, 3, 16, 16, device="cuda"),
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.1), time_limit=0.5)
    assert step.plan.graph.meta.get("device") == "cuda" and not kernel_probes._measured


def test_a_cpu_scalar_of_a_cuda_step_stays_on_the_host():
    """An op of a CUDA step whose result is a CPU tensor (a scalar the model computes on
    the host) runs outside the CUDA arena, and its buffer takes no device bytes; the
    step's Adam counts and hyper-parameters are host memory too."""
    import copy

    from model_ir.testing.torch_models import eager_step
    from model_runtime import optimize

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.lin(x) * (torch.full((), 3.0) * 0.5).to(x.device)

    torch.manual_seed(0)
    model = Scaled().cuda()
    ref = copy.deepcopy(model)
    opt, ref_opt = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (model, ref))
    x = torch.randn(4, 8, device="cuda")
    step = optimize(model, x, optimizer=opt, executor="arena", time_limit=1)
    host = [b for b in step.plan.graph.buffers if b.meta.get("host")]
    assert {b.kind for b in host} >= {"optimizer_state", "hyper_parameter"} and all(b.size == 0 for b in host)
    for _ in range(3):
        assert torch.equal(step(x), eager_step(ref, ref_opt, (x,)))
