"""Capturing a step for CUDA on a machine without a GPU (model_ir.torch.cuda_kernels):
the graph records the kernels CUDA dispatch picks, and nothing leaks out of the capture."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn

from model_ir.testing.torch_models import mlp, small_cnn
from model_ir.torch import CaptureError, capture
from model_ir.torch.cuda_kernels import emulate_cuda, sdpa_backend

F = nn.functional


class Attention(nn.Module):
    """Self-attention through ``F.scaled_dot_product_attention`` and an ``nn.MultiheadAttention``."""

    def __init__(self, dim: int = 32, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.qkv, self.heads, self.p = nn.Linear(dim, 3 * dim), heads, dropout
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (t.reshape(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
        return self.drop(self.mha(y, y, y, need_weights=False)[0])


def targets(graph) -> set[str]:
    return {op.target for op in graph.ops}


def test_attention_and_dropout_take_cudas_kernels():
    torch.manual_seed(0)
    model, x = Attention(), torch.randn(2, 16, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cpu = capture(model, x, optimizer=opt)
    cuda = capture(model, x, optimizer=opt, device="cuda")
    assert cpu.meta["device"] == "cpu" and cpu.meta["kernels"] == "native"
    assert cuda.meta["device"] == "cuda" and cuda.meta["kernels"] == "emulated"
    efficient = {"aten._scaled_dot_product_efficient_attention.default",
                 "aten._scaled_dot_product_efficient_attention_backward.default"}
    assert efficient <= targets(cuda) and not efficient & targets(cpu)
    assert "aten.native_dropout.default" in targets(cuda) and "aten.bernoulli_.float" in targets(cpu)
    assert not any("for_cpu" in t or "bernoulli" in t for t in targets(cuda))
    # Both calls (functional and nn.MultiheadAttention, through C++) were redirected.
    forwards = [op for op in cuda.ops if op.target == "aten._scaled_dot_product_efficient_attention.default"]
    assert len(forwards) == 2
    # The philox seed and offset are host tensors on CUDA: no device bytes, still read by backward.
    bufs = {b.id: b for b in cuda.buffers}
    readers = {b for op in cuda.ops if "backward" in op.target for b in op.inputs}
    for op in forwards:
        out, lse, seed, offset = (bufs[b] for b in op.outputs)
        assert out.size > 0 and lse.size > 0 and not out.meta.get("host")
        assert seed.size == offset.size == 0 and seed.meta["host"] and offset.meta["host"]
        assert {seed.id, offset.id} <= readers


def test_batch_norm_takes_cudnn_and_the_overrides_end_with_the_capture():
    torch.manual_seed(0)
    model, x = small_cnn(), torch.randn(4, 3, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cuda = capture(model, x, optimizer=opt, device="cuda")
    assert {"aten.cudnn_batch_norm.default", "aten.cudnn_batch_norm_backward.default"} <= targets(cuda)
    cpu = capture(model, x, optimizer=opt)  # the overrides are gone: CPU kernels again
    assert "aten.native_batch_norm.default" in targets(cpu) and "aten.cudnn_batch_norm.default" not in targets(cpu)
    q = torch.randn(1, 2, 8, 8)
    assert torch.allclose(F.scaled_dot_product_attention(q, q, q), torch.softmax(q @ q.mT / 8 ** 0.5, -1) @ q,
                          atol=1e-6)


def test_optimizers_left_to_their_default_run_foreach_as_on_cuda():
    model, x = mlp(16, 2), torch.randn(4, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # foreach=None: CUDA's default is foreach
    cuda = capture(model, x, optimizer=opt, device="cuda")
    assert any(t.startswith("aten._foreach_") for t in targets(cuda))
    assert opt.param_groups[0]["foreach"] is None  # the user's optimizer is left as it was
    explicit = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    assert not any(t.startswith("aten._foreach_") for t in targets(capture(model, x, optimizer=explicit,
                                                                           device="cuda")))



def test_adam_with_a_tensor_learning_rate_stays_off_foreach_as_on_cuda():
    """torch does not turn foreach on for Adam's tensor learning rate unless capturable
    (its foreach kernel refuses one); SGD's goes foreach. Both capture for CUDA."""
    model, x = mlp(16, 2), torch.randn(4, 16)
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        opt = cls(model.parameters(), lr=torch.tensor(1e-3))
        assert not any(t.startswith("aten._foreach_") for t in targets(capture(model, x, optimizer=opt,
                                                                               device="cuda")))
        assert opt.param_groups[0]["foreach"] is None
    sgd = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1), momentum=0.9)
    assert any(t.startswith("aten._foreach_") for t in targets(capture(model, x, optimizer=sgd, device="cuda")))



def _host_inputs(graph) -> dict[str, int]:
    """Input buffers a CUDA step keeps on the host, by kind and key (``optimizer_state:step``)."""
    found = {}
    for b in graph.buffers:
        if b.meta.get("host") and b.kind in ("optimizer_state", "hyper_parameter"):
            assert b.size == 0, b.id
            key = f"{b.kind}:{b.id.rsplit('/', 1)[-1]}"
            found[key] = found.get(key, 0) + 1
    return found


def test_state_and_hyper_parameters_a_cuda_step_keeps_on_the_host_take_no_device_bytes():
    """Lifted hyper-parameters are float64 CPU tensors; Adam keeps its step counts on the
    host unless capturable or fused, NAdam its mu_product too: no device bytes (the
    emulated capture counted 512 each, about 74 KiB for GPT-2 with Adam). The moments
    and momentum buffers are device memory."""
    model, x = mlp(16, 2), torch.randn(4, 16)
    n = sum(1 for p in model.parameters())
    for make, host in (
        (lambda ps: torch.optim.Adam(ps, lr=1e-3),
         {"optimizer_state:step": n, **{f"hyper_parameter:{k}": 1 for k in ("lr", "betas.0", "betas.1", "eps")}}),
        (lambda ps: torch.optim.NAdam(ps), {"optimizer_state:step": n, "optimizer_state:mu_product": n,
                                            **{f"hyper_parameter:{k}": 1 for k in
                                               ("lr", "betas.0", "betas.1", "eps", "momentum_decay")}}),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
         {"hyper_parameter:lr": 1, "hyper_parameter:momentum": 1}),
    ):
        opt = make(model.parameters())
        cuda, cpu = capture(model, x, optimizer=opt, device="cuda"), capture(model, x, optimizer=opt)
        assert _host_inputs(cuda) == host and not _host_inputs(cpu)
        moments = [b for b in cuda.buffers if b.kind == "optimizer_state" and not b.meta.get("host")]
        assert moments and all(b.size > 0 for b in moments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fused optimizer's hyper-parameters stay constants
        fused = capture(model, x, optimizer=torch.optim.AdamW(model.parameters(), fused=True), device="cuda")
    assert not _host_inputs(fused)  # fused: step counts on the device
    # capturable (as CUDA graphs need): traced on the CPU stand-ins, step counts on the device
    capturable = capture(model, x, optimizer=torch.optim.Adam(model.parameters(), capturable=True), device="cuda")
    assert "optimizer_state:step" not in _host_inputs(capturable)
    assert any(t.startswith("aten._foreach_") for t in targets(capturable))


@pytest.mark.gpu
def test_an_emulated_capture_keeps_on_the_host_what_a_gpu_capture_does():
    """On a GPU (``uv run pytest -m gpu``): the inputs an emulated capture marks as host
    memory are the CPU tensors of a capture on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    model, x = mlp(16, 2), torch.randn(4, 16)
    for make in (lambda ps: torch.optim.Adam(ps, lr=1e-3), lambda ps: torch.optim.NAdam(ps),
                 lambda ps: torch.optim.Adam(ps, lr=1e-3, capturable=True)):
        emulated = _host_inputs(capture(model, x, optimizer=make(model.parameters()), device="cuda"))
        gpu_model = mlp(16, 2).cuda()
        native = _host_inputs(capture(gpu_model, x.cuda(), optimizer=make(gpu_model.parameters())))
        assert emulated == native


class LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def test_cpu_only_kernels_are_named_in_a_cuda_capture():
    """CUDA runs an LSTM with cuDNN, which capture does not emulate: the graph says that
    its oneDNN ops are CPU's, with a warning; a CPU capture and a CUDA capture without
    them say nothing."""
    model, x = LSTMHead(), torch.randn(2, 5, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = capture(model, x, optimizer=opt)
    if "aten.mkldnn_rnn_layer.default" not in targets(cpu):
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    assert "cpu_kernels" not in cpu.meta
    assert "unsized_results" not in cpu.meta  # oneDNN sized the workspace (test_capture_strides)
    with pytest.warns(UserWarning, match=r"aten::mkldnn_rnn_layer, aten::mkldnn_rnn_layer_backward kept CPU's"):
        cuda = capture(model, x, optimizer=opt, device="cuda")
    assert cuda.meta["cpu_kernels"] == ["aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward"]
    assert "unsized_results" not in cuda.meta  # its figures are the CPU kernels' it keeps, workspace too
    assert "cpu_kernels" not in capture(mlp(8, 2), torch.randn(2, 8), device="cuda").meta


def test_eval_and_errors():
    model = small_cnn().eval()
    graph = capture(model, torch.randn(2, 3, 16, 16), train=False, device="cuda")
    assert "aten.cudnn_batch_norm.default" in targets(graph) and graph.meta["device"] == "cuda"
    with pytest.raises(CaptureError, match="'cpu' or 'cuda'"):
        capture(model, torch.randn(2, 3, 16, 16), train=False, device="tpu")
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        with emulate_cuda(sdpa="fast"):
            pass


@pytest.mark.parametrize("dtype,mask,causal,expected", [
    (torch.float32, False, False, "efficient"),   # fp32 is never flash
    (torch.float16, False, True, "flash"),
    (torch.bfloat16, True, False, "efficient"),   # flash takes no mask
])
def test_sdpa_backend_follows_cudas_rules(dtype, mask, causal, expected):
    q = torch.randn(1, 2, 8, 64, dtype=dtype)
    m = torch.zeros(8, 8, dtype=dtype) if mask else None
    assert sdpa_backend(q, q, q, m, causal, False) == expected


def test_sdpa_backend_honours_sdpa_kernel_and_odd_head_dims():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 8, 64)
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backend(q, q, q, None, False, False) == "math"
    odd = torch.randn(1, 2, 8, 6)  # fp32 efficient needs head dims divisible by 4
    assert sdpa_backend(odd, odd, odd, None, False, False) == "math"


@pytest.mark.parametrize("dtype,wdtype,dim,batch,training", [
    (torch.float32, torch.float32, 4, 8, True), (torch.float16, torch.float32, 4, 8, True),
    (torch.float16, torch.float16, 4, 8, True), (torch.bfloat16, torch.bfloat16, 4, 8, True),
    (torch.float32, torch.float32, 2, 8, True), (torch.float32, torch.float32, 3, 70000, False),
    (torch.float32, torch.float32, 5, 2, False),
])
def test_batch_norm_rule_agrees_with_torchs_own_selection(dtype, wdtype, dim, batch, training):
    """The emulated rule against ``torch._C._select_batch_norm_backend`` on fake CUDA tensors
    (which need no driver for this call)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from model_ir.torch.cuda_kernels import _uses_cudnn_batch_norm

    with FakeTensorMode():
        x = torch.empty(batch, 3, *([4] * (dim - 2)), dtype=dtype, device="cuda")
        w, b = (torch.empty(3, dtype=wdtype, device="cuda") for _ in range(2))
        rm, rv = (torch.empty(3, dtype=wdtype, device="cuda") for _ in range(2))
        try:
            chosen = torch._C._select_batch_norm_backend(x, w, b, rm, rv, training, 1e-5)
        except RuntimeError as e:  # a build without CUDA
            pytest.skip(f"torch cannot select a CUDA backend here: {e}")
    assert (str(chosen).endswith("Cudnn")) == _uses_cudnn_batch_norm(x, w, b, rm, rv, training, True)
