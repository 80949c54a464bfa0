"""CUDA's autocast policy on the CPU stand-ins of an emulated capture
(model_ir.torch.cuda_autocast), checked against CUDA autocast itself: PyTorch applies it
to fake CUDA tensors without a driver once it is switched on by hand."""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from model_ir.torch import capture
from model_ir.torch.cuda_autocast import CUDA_POLICY, autocast_overrides, cuda_autocast_policy, unknown_cuda_operators

F = nn.functional
BF16 = torch.bfloat16
needs_cuda_build = pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch has no CUDA autocast")


@contextlib.contextmanager
def cuda_autocast(dtype=BF16):
    """CUDA autocast on fake CUDA tensors (``torch.autocast`` refuses without a GPU)."""
    before = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", before[0])
        torch.set_autocast_dtype("cuda", before[1])
        torch.clear_autocast_cache()


@contextlib.contextmanager
def emulated(dtype=BF16):
    with cuda_autocast_policy(), torch.autocast("cpu", dtype=dtype):
        yield


def test_the_table_covers_the_installed_torch():
    assert unknown_cuda_operators() == []
    overrides = autocast_overrides()
    assert overrides["aten::layer_norm"] == "fp32" and overrides["aten::cat"] is None  # cat: CPU-only promote
    assert overrides["aten::linear"] == "lower_precision_fp" and set(CUDA_POLICY.values()) == {
        "lower_precision_fp", "fp32", "fp32_set_opt_dtype", "fp32_append_dtype", "promote", "banned"}


CASES = {
    "linear": lambda x, w, v: F.linear(x, w),
    "einsum": lambda x, w, v: torch.einsum("ij,jk->ik", x, w),
    "mv": lambda x, w, v: torch.mv(w, v),
    "layer_norm": lambda x, w, v: F.layer_norm(x.to(BF16), (8,)),
    "group_norm": lambda x, w, v: F.group_norm(x.to(BF16).view(4, 8, 1), 2),
    "rms_norm": lambda x, w, v: F.rms_norm(x.to(BF16), (8,)),
    "softmax": lambda x, w, v: torch.softmax(x.to(BF16), -1),
    "log_softmax": lambda x, w, v: F.log_softmax(x.to(BF16), -1),
    "sum": lambda x, w, v: x.to(BF16).sum(),
    "sum over a dim": lambda x, w, v: x.to(BF16).sum(0),
    "sum, explicit dtype": lambda x, w, v: x.to(BF16).sum(0, dtype=torch.float16),
    "cumsum": lambda x, w, v: x.to(BF16).cumsum(0),
    "exp": lambda x, w, v: x.to(BF16).exp(),
    "pow": lambda x, w, v: x.to(BF16).pow(2),
    "norm": lambda x, w, v: x.to(BF16).norm(),
    "norm over a dim": lambda x, w, v: torch.norm(x.to(BF16), dim=0),
    "vector_norm": lambda x, w, v: torch.linalg.vector_norm(x.to(BF16)),
    "mse_loss": lambda x, w, v: F.mse_loss(x.to(BF16), x.to(BF16)),
    "cross_entropy": lambda x, w, v: F.cross_entropy(x.to(BF16), torch.zeros(4, dtype=torch.long, device=x.device)),
    "bce_with_logits": lambda x, w, v: F.binary_cross_entropy_with_logits(x.to(BF16), x),
    "cat, mixed": lambda x, w, v: torch.cat([x.to(BF16), x]),
    "stack": lambda x, w, v: torch.stack([x.to(BF16), x.to(BF16)]),
    "addcmul": lambda x, w, v: torch.addcmul(x.to(BF16), x.to(BF16), x.to(BF16)),
    "addcmul, mixed": lambda x, w, v: torch.addcmul(x.to(BF16), x, x.to(BF16)),
    "interpolate": lambda x, w, v: F.interpolate(x.to(BF16).view(1, 4, 8, 1), scale_factor=2),
    "gelu": lambda x, w, v: F.gelu(x.to(BF16)),
    "conv2d, padding same": lambda x, w, v: F.conv2d(x.view(1, 1, 4, 8), w[:1, :1].expand(1, 1, 3, 3).contiguous(),
                                                    padding="same"),
    "float64": lambda x, w, v: F.layer_norm(x.double(), (8,)),
}


def _dtypes(device: str, policy) -> dict[str, torch.dtype]:
    out = {}
    with FakeTensorMode():
        x, w, v = (torch.empty(*s, device=device) for s in ((4, 8), (8, 8), (8,)))
        for name, f in CASES.items():
            with policy():
                out[name] = f(x, w, v).dtype
    return out


@needs_cuda_build
def test_each_policy_gives_cudas_dtypes():
    cuda = _dtypes("cuda", cuda_autocast)
    assert _dtypes("cpu", emulated) == cuda
    # CPU's own policy differs on much of this: the check has teeth.
    cpu = _dtypes("cpu", lambda: torch.autocast("cpu", dtype=BF16))
    differ = {n for n in CASES if cpu[n] != cuda[n]}
    assert {"layer_norm", "softmax", "log_softmax", "sum", "exp", "mv", "interpolate"} <= differ
    # The overrides end with the context.
    with FakeTensorMode(), torch.autocast("cpu", dtype=BF16):
        assert F.layer_norm(torch.empty(4, 8, dtype=BF16), (8,)).dtype == BF16


def test_binary_cross_entropy_is_refused_as_on_cuda():
    with emulated(), pytest.raises(RuntimeError, match="unsafe to autocast on CUDA"):
        F.binary_cross_entropy(torch.rand(4), torch.rand(4))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "prim":  # device queries, which CUDA kernels make and CPU ones do not
            return out
        flat = out if isinstance(out, (tuple, list)) else (out,)
        self.calls.append((str(func.overloadpacket), tuple(str(t.dtype) for t in flat if isinstance(t, torch.Tensor))))
        return out


class Block(nn.Module):
    """LayerNorm, linear layers, attention written out, GELU, a residual and a mean."""

    def __init__(self, d: int = 16, classes: int = 5):
        super().__init__()
        self.ln, self.fc, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        q, k, v = self.fc(self.ln(x)).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
        h = x + F.gelu(self.proj(a))
        return self.head(torch.einsum("bsd->bd", h) / h.size(1))


@needs_cuda_build
def test_a_forward_and_loss_cast_op_by_op_as_on_cuda():
    def run(device, policy):
        with FakeTensorMode(), torch.device(device):
            model = Block()
            x = torch.empty(2, 6, 16, device=device)
            y = torch.zeros(2, dtype=torch.long, device=device)
            with _Recorder() as rec, policy():
                F.cross_entropy(model(x), y)
        return rec.calls

    cuda = run("cuda", cuda_autocast)
    assert run("cpu", emulated) == cuda
    assert run("cpu", lambda: torch.autocast("cpu", dtype=BF16)) != cuda


def test_a_cuda_capture_under_autocast_holds_cudas_dtypes():
    torch.manual_seed(0)
    model, x, y = Block(), torch.randn(2, 6, 16), torch.zeros(2, dtype=torch.long)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def dtypes(device):
        g = capture(model, x, loss_fn=lambda out: F.cross_entropy(out, y), optimizer=opt, device=device,
                    autocast=BF16)
        bufs = {b.id: b for b in g.buffers}
        return {op.target: bufs[op.outputs[0]].dtype for op in g.ops if op.outputs and op.meta["phase"] == "forward"}

    cuda, cpu = dtypes("cuda"), dtypes("cpu")
    # The attention probabilities: float32 on CUDA (softmax is fp32_set_opt_dtype), bf16 on CPU.
    assert cuda["aten._softmax.default"] == "float32" and cpu["aten._softmax.default"] == "bfloat16"
    # The einsum (a sum over a dim here): CUDA casts its float32 input to bf16, CPU does not.
    assert cuda["aten.sum.dim_IntList"] == "bfloat16" and cpu["aten.sum.dim_IntList"] == "float32"


class SharedWeight(nn.Module):
    """One weight through einsum (CUDA-only lower precision) and linear (both devices')."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(8, 8))

    def forward(self, x):
        y = torch.einsum("ij,jk->ik", x, self.w)
        return F.linear(torch.einsum("ij,jk->ik", y, self.w), self.w) + torch.mm(y, self.w)


@needs_cuda_build
def test_a_weight_is_cast_once_per_region_whichever_op_asks():
    def run(device, policy):
        with FakeTensorMode(), torch.device(device):
            model, x = SharedWeight(), torch.empty(4, 8)
            with _Recorder() as rec, policy():
                model(x).sum()
        return rec.calls

    cuda = run("cuda", cuda_autocast)
    assert sum(name == "aten._to_copy" for name, _ in cuda) == 2  # the weight once, x once
    assert run("cpu", emulated) == cuda


def test_promote_refuses_a_third_floating_type_as_cuda_does():
    with emulated(), pytest.raises(RuntimeError, match="prioritize"):
        torch.addcmul(torch.ones(2, dtype=BF16), torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=BF16))


@pytest.mark.gpu
@pytest.mark.parametrize("make", ["block", "cnn"])
def test_an_emulated_autocast_capture_is_the_one_a_gpu_makes(make):
    """On a GPU (``uv run pytest -m gpu``): a step captured for CUDA under bf16 autocast
    from a CPU model (emulated) has the ops and dtypes of the one captured from the model
    on the GPU (CUDA's own dispatch and autocast), backward and update included."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from model_ir.testing.torch_models import small_cnn

    torch.manual_seed(0)
    if make == "block":
        model, x, y, loss = Block(), torch.randn(2, 6, 16), torch.zeros(2, dtype=torch.long), F.cross_entropy
    else:
        model, x, y = small_cnn(), torch.randn(4, 3, 16, 16), None
        loss = None
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def ops(x, y):
        fn = (lambda out: loss(out, y)) if loss else None
        g = capture(model, x, loss_fn=fn, optimizer=opt, device="cuda", autocast=BF16)
        return [(op.target, tuple(g.buffer(b).dtype for b in op.outputs)) for op in g.ops]

    emulated = ops(x, y)
    model.cuda()
    native = ops(x.cuda(), None if y is None else y.cuda())
    assert emulated == native
