"""The captured graph's tensors have the strides and dtypes eager's kernels give them,
also along dimensions of size 1 and under autocast, where the meta functions of fake
tensors choose otherwise (model_ir.torch.eager_strides): every executor lays results out
as the graph says, later kernels (a convolution's backward) sum in another order on
other strides, and a result of another dtype has other bytes than planned."""

from __future__ import annotations

import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch import fx, nn  # noqa: E402
from torch._prims_common import make_contiguous_strides_for as contiguous_strides  # noqa: E402

from model_ir.testing.torch_models import channels_last_cnn, small_cnn  # noqa: E402
from model_ir.torch import capture, capture_step  # noqa: E402
from model_ir.simulator import EAGER_IN_PLACE  # noqa: E402
from model_ir.torch.eager_strides import EagerStridesFakeMode, eager_results  # noqa: E402
from model_ir.torch.gradient_accumulation import add_as_in_place  # noqa: E402


def unlike_eager(model, batch, target, optimizer, autocast=None) -> list[str]:
    """The nodes whose result, replayed on real tensors as eager runs them (the gradient
    sums it runs in place laid out as their first gradient), has other strides or another
    dtype than traced."""
    loss_fn = nn.functional.cross_entropy
    captured = capture_step(model, batch, loss_fn=loss_fn, optimizer=optimizer, targets=(target,), autocast=autocast)
    tensors = captured.bind(model, optimizer, batch, (target,))
    unlike = []

    class Replay(fx.Interpreter):
        def run_node(self, node):
            if node.meta.get(EAGER_IN_PLACE):
                result = add_as_in_place(*self.fetch_args_kwargs_from_env(node)[0])
            else:
                result = super().run_node(node)
            traced = node.meta.get("val")
            listed = [(v if isinstance(v, (tuple, list)) else [v]) for v in (result, traced)]
            for real, fake in zip(*listed):
                if not (isinstance(real, torch.Tensor) and isinstance(fake, torch.Tensor)):
                    continue
                if (real.stride(), real.dtype) != (fake.stride(), fake.dtype):
                    unlike.append(f"{node.target}: eager {real.stride()} {real.dtype}, "
                                  f"traced {fake.stride()} {fake.dtype}")
            return result

    with torch.no_grad():  # the replay updates the parameters in place, as the step does
        Replay(captured.module).run(*tensors)
    return unlike


class LayerNormOverChannels(nn.Module):
    """ConvNeXt's and Swin's layer norm over the channels of a permuted map: on a 1x1 map
    (kernel 8), (N, 1, 1, C) tensors; on a 6x6 map (kernel 3), a non-contiguous input."""

    def __init__(self, channels: int = 16, kernel: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel)
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        y = self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("make_model,channels_last", [(channels_last_cnn, True), (LayerNormOverChannels, False)])
def test_results_have_the_strides_of_eager_kernels(make_model, channels_last):
    torch.manual_seed(0)
    model = make_model()
    batch = torch.randn(4, 3, 8, 8)
    if channels_last:
        batch = batch.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert unlike_eager(model, batch, torch.randint(0, 10, (4,)), optimizer) == []


@pytest.mark.parametrize("make_model", [small_cnn, LayerNormOverChannels, lambda: LayerNormOverChannels(kernel=3)])
@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_norms_give_eager_layouts_and_dtypes(make_model, autocast):
    # CPU batch and layer norm of bf16 activations with fp32 weights save fp32 statistics
    # (the meta functions said bf16: the arena's fallback found more bytes than planned);
    # layer norm's output and input gradient are contiguous for a permuted input.
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert unlike_eager(model, torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)), optimizer,
                        autocast=autocast) == []


def test_gradient_sums_out_of_place_get_the_strides_of_eager_add():
    # The sums eager runs out of place are laid out as an out-of-place add, by TensorIterator.
    x = torch.randn(2, 8, 1, 1).to(memory_format=torch.channels_last)
    mode = EagerStridesFakeMode()
    with mode:
        fake = mode.from_tensor(x)
        mode.summing = True
        out_of_place = fake + fake
        mode.in_place_sums = frozenset({1})
        in_place = fake + fake
        mode.summing = False
    assert out_of_place.stride() == (x + x).stride() == contiguous_strides(x.shape)
    assert in_place.stride() == x.stride()


def test_a_second_trace_for_in_place_sums_warns_nothing_again(monkeypatch):
    capture_module = sys.modules["model_ir.torch.capture"]  # the package's `capture` is the function
    traces = []
    trace_step = capture_module.trace_step
    monkeypatch.setattr(capture_module, "trace_step", lambda *a, **k: traces.append(k) or trace_step(*a, **k))
    kept = []
    model = channels_last_cnn()
    model[0].register_forward_hook(lambda module, inputs, output: kept.append(output))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        capture_step(model, torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last),
                     optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    # Traced twice (a sum eager runs in place was laid out otherwise), warned once.
    assert [bool(k["in_place_sums"]) for k in traces] == [False, True]
    assert [str(w.message).count("keep tensors in Python") for w in seen] == [1]


def test_random_ops_are_not_run_to_find_strides():
    layers = list(channels_last_cnn())  # dropout on its (N, C, 1, 1) gate, before the head
    model = nn.Sequential(*layers[:-2], nn.Dropout(0.5), *layers[-2:])
    batch = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    state = torch.get_rng_state()
    capture_step(model, batch)
    assert torch.equal(torch.get_rng_state(), state)
    # The capture restores the generator anyway: the stand-ins themselves must not draw.
    x = torch.randn(2, 8, 1, 1).to(memory_format=torch.channels_last)
    out = torch.ops.aten.native_dropout.default(x, 0.5, True)
    state = torch.get_rng_state()
    assert eager_results(torch.ops.aten.native_dropout.default, (x, 0.5, True), {}, out) == []
    assert torch.equal(torch.get_rng_state(), state)


def test_what_eager_kernels_do_with_free_strides():
    x = torch.randn(2, 8, 1, 1).to(memory_format=torch.channels_last)
    assert x.stride() != contiguous_strides(x.shape)
    sigmoid = torch.ops.aten.sigmoid.default
    # TensorIterator's fast path makes a contiguous result of contiguous operands ...
    fake_like = torch.empty_strided(x.shape, x.stride())
    assert eager_results(sigmoid, (x,), {}, fake_like) == [(0, x.dtype, contiguous_strides(x.shape))]
    # ... and clone keeps its input's strides (memory_format=preserve_format).
    assert eager_results(torch.ops.aten.clone.default, (x,), {}, fake_like) == []


@pytest.mark.parametrize("op, scalars", [("hardtanh_backward", (0.0, 6.0)), ("hardswish_backward", ()),
                                         ("hardsigmoid_backward", ()), ("softplus_backward", (1.0, 20.0))])
def test_mixed_layouts_follow_eager_kernels(op, scalars):
    """A gradient in one memory format and the activation in another (ReLU6's backward
    after global pooling in a channels-last MobileNet): the kernel follows the gradient,
    these ops' meta functions the activation."""
    func = getattr(torch.ops.aten, op).default
    grad, x = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    for args in [(grad, x, *scalars), (grad.to(memory_format=torch.channels_last), x.contiguous(), *scalars)]:
        eager = func(*args)
        with EagerStridesFakeMode() as mode:
            traced = func(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert traced.stride() == eager.stride() == args[0].stride(), (op, traced.stride(), eager.stride())


def test_gradient_sums_eager_runs_in_place_keep_the_first_gradients_strides():
    torch.manual_seed(0)
    model = channels_last_cnn()
    captured = capture_step(model, torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last),
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    in_place = [n for n in captured.module.graph.nodes if n.meta.get(EAGER_IN_PLACE)]
    assert in_place  # the residual block's input gradient
    for n in in_place:
        assert n.meta["val"].stride() == n.args[0].meta["val"].stride(), n


class _TwoLSTMs(nn.Module):
    """Two LSTM layers whose workspaces differ: the first's input is wider than its hidden
    state, which oneDNN's workspace grows with."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.lstm, self.head = nn.LSTM(40, hidden, num_layers=2, batch_first=True), nn.Linear(hidden, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def test_onednn_lstm_workspaces_are_sized_as_onednn_sizes_them():
    """oneDNN's LSTM layer returns in training a workspace whose meta kernel says 0 bytes:
    the plan left it out and the arena executor kept it outside the arena. The graph gives
    each layer's workspace the bytes the real kernel returns; eval has none."""
    model, x = _TwoLSTMs(), torch.randn(3, 7, 40)
    real = []

    class Record(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args, kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.mkldnn_rnn_layer.default:
                real.append(out[3].numel() * out[3].element_size())
            return out

    with Record():
        model(x)
    if not real:
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    assert len(real) == 2 and real[0] > real[1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said about unsized results
        graph = capture(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    layers = [op for op in graph.ops if op.target == "aten.mkldnn_rnn_layer.default"]
    assert [graph.buffer(op.outputs[-1]).size for op in layers] == real
    assert "unsized_results" not in graph.meta
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "unsized_results" not in capture(model.eval(), x, train=False).meta


def test_sizing_onednn_workspaces_copies_no_weights():
    """Sizing a workspace runs the layer once: on the model's own weights, where zeros of
    their shapes made planning allocate one layer's weights beyond what it keeps."""
    from model_ir.testing.live_memory import peak_allocated_during
    from model_ir.torch import eager_strides

    eager_strides._workspace_sizes.clear()  # sized afresh, whatever ran before
    model, x = _TwoLSTMs(512), torch.randn(1, 4, 40)
    weights = sum(p.numel() * p.element_size() for n, p in model.lstm.named_parameters() if n.endswith("_l1"))
    peak, graph = peak_allocated_during(
        lambda: capture(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    if not any(op.target == "aten.mkldnn_rnn_layer.default" for op in graph.ops):
        pytest.skip("this torch build runs CPU LSTMs without oneDNN")
    assert weights > 8 * 2**20 and peak < 2**20


@pytest.mark.parametrize("loss", ["mse_loss", "smooth_l1_loss", "l1_loss"])
def test_reduced_losses_keep_the_storage_of_their_unreduced_loss(loss):
    """CPU's MSE and smooth L1 (also BCE, soft margin) return the reduced loss on a storage
    of the unreduced one (the kernel reduces in place), where the meta kernel says 4
    bytes: the loss buffer has the kernel's size; L1 reduces into a fresh scalar. Not
    applied where CUDA is emulated (CUDA's storage unmeasured)."""
    model, x, t = nn.Linear(32, 32), torch.randn(64, 32), torch.randn(64, 32)
    real = getattr(nn.functional, loss)(model(x), t).untyped_storage().nbytes()
    assert real == (64 * 32 * 4 if loss != "l1_loss" else 4)

    def loss_buffer(**kw):
        graph = capture(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        loss_fn=getattr(nn.functional, loss), targets=(t,), granularity=1, **kw)
        return next(b.size for b in graph.buffers if b.output)

    assert loss_buffer() == real
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert loss_buffer(device="cuda") == 4
