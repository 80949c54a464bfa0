"""Measuring CPU kernels' temporaries by running each distinct call once (model_ir.torch.kernel_probes)."""

import ctypes
import os
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from model_ir.testing.live_memory import exact_peak_allocated_during  # noqa: E402
from model_ir.torch import kernel_probes  # noqa: E402

_conv, _conv_backward = torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default


def _calls(channels_last: bool):
    """A 3x3 convolution's forward and backward calls (channels multiples of oneDNN's blocks)."""
    torch.manual_seed(0)
    x, w = torch.randn(4, 32, 16, 16), torch.randn(32, 32, 3, 3)
    if channels_last:
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    forward = [x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1]
    grad = torch.randn_like(_conv(*forward))
    return [(_conv, forward), (_conv_backward, [grad, x, w, [32], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                [True, True, True]])]


def _storage_bytes(out) -> int:
    out = out if isinstance(out, tuple) else (out,)
    return sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))


def _others():
    """Calls of the other measured ops: statistics and gradients reduced in per-thread
    buffers, a softmax over the channels of a channels-last map, a roll over two
    dimensions."""
    torch.manual_seed(0)
    x, w = torch.randn(8, 32, 16, 16), torch.randn(32)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 32).contiguous()
    _, mean, rstd = torch.ops.aten.native_layer_norm(rows, [32], w, w, 1e-5)
    aten = torch.ops.aten
    pooled = torch.randn(2, 32, 1, 1)  # both layouts at once: the kernel's channels-last path, per-thread sums
    pooled_grad = pooled.contiguous(memory_format=torch.channels_last)
    return [(aten.native_batch_norm.default, [x, w, w, torch.zeros(32), torch.ones(32), True, 0.1, 1e-5]),
            (aten.native_batch_norm_backward.default, [pooled_grad, pooled_grad, w, None, None, w, w, True, 1e-5,
                                                       [True, True, True]]),
            (aten.native_layer_norm_backward.default, [rows, rows, [32], mean, rstd, w, w, [True, True, True]]),
            (aten._log_softmax.default, [x.contiguous(memory_format=torch.channels_last), 1, False]),
            (aten._safe_softmax.default, [x, -1, None]),
            (aten.roll.default, [x, [2, 2], [2, 3]]),
            (aten.gelu_backward.default, [x.transpose(2, 3), x, "none"]),
            (aten.sort.default, [torch.arange(64), -1, False])]


@pytest.mark.parametrize("calls", ["nchw", "channels-last", "others"])
def test_a_calls_temporaries_are_what_it_allocates_beyond_its_results(calls):
    """The measured temporary of a call is the exact peak of its call (every allocation
    and free) less its results: oneDNN's blocked-layout buffers, which no rule from the
    arguments' layouts saw (a contiguous NCHW forward copies no argument), per-thread
    buffers, a roll's intermediate, a mask of every score, GELU's copies; and capture
    measures each of these calls."""
    from model_ir.torch.cpu_temporaries import measures

    kernel_probes._measured.clear()
    for func, values in _others() if calls == "others" else _calls(calls == "channels-last"):
        assert measures(func, values), func
        kept, arguments = [], func._schema.arguments
        args = [v for v, a in zip(values, arguments) if not a.kwarg_only]
        kwargs = {a.name: v for v, a in zip(values, arguments) if a.kwarg_only}
        peak, _ = exact_peak_allocated_during(lambda: kept.append(func(*args, **kwargs)))
        expected = peak - _storage_bytes(kept[0])
        assert kernel_probes.measured_temporaries(func, values) == expected
        assert expected > 0


def test_each_distinct_call_is_measured_once(monkeypatch):
    """Per call and thread count (oneDNN sizes its scratchpads by the threads)."""
    kernel_probes._measured.clear()
    runs = []
    measure = kernel_probes._measure
    monkeypatch.setattr(kernel_probes, "_measure", lambda func, values: runs.append(func) or measure(func, values))
    (func, values), _ = _calls(False)
    first = kernel_probes.measured_temporaries(func, values)
    assert kernel_probes.measured_temporaries(func, [v.clone() if isinstance(v, torch.Tensor) else v
                                                     for v in values]) == first
    assert len(runs) == 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        kernel_probes.measured_temporaries(func, values)
    finally:
        torch.set_num_threads(threads)
    assert len(runs) == 2


def test_under_a_running_profiler_calls_are_measured_in_a_child_process():
    """torch.profiler cannot nest: a second session would cancel the user's trace. Under
    one, the calls are measured in a child process, to the same bytes, and the user's
    trace keeps its events."""
    calls = _calls(False)
    kernel_probes._measured.clear()
    here = [kernel_probes.measured_temporaries(f, v) for f, v in calls]
    kernel_probes._measured.clear()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        assert kernel_probes.measured_temporaries(*calls[0]) is None
        kernel_probes.measure_calls(calls)
        torch.zeros(1000)
    assert [kernel_probes.known_temporaries(f, v) for f, v in calls] == here
    assert any(e.name() == "[memory]" for e in prof.profiler.kineto_results.events())


def test_a_call_on_fakes_runs_on_the_weights_they_stand_for(monkeypatch):
    """Capture measures on the model's own weights (no copy of them) and zeros of the
    traced shapes and strides for the rest."""
    kernel_probes._measured.clear()
    given = []
    monkeypatch.setattr(kernel_probes, "_measure", lambda func, values: given.append(values) or 0)
    (func, values), _ = _calls(True)
    weight = values[1]
    with FakeTensorMode() as mode:
        fakes = [mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for v in values]
        assert kernel_probes.measured_temporaries(func, fakes, {fakes[1]: weight}) == 0
    (x, w, *_), = given
    assert w is not weight and w.data_ptr() == weight.data_ptr()  # detached, not copied
    assert not isinstance(x, type(fakes[0])) and x.stride() == values[0].stride() and not x.any()


def test_a_call_that_fails_is_left_out_with_a_warning():
    """A kernel that cannot run on the traced shapes (here a convolution whose weight does
    not fit its input) leaves its temporaries unknown; capture goes on."""
    kernel_probes._measured.clear()
    (func, values), _ = _calls(False)
    values = [values[0], torch.randn(32, 16, 3, 3), *values[2:]]
    with pytest.warns(UserWarning, match="could not run aten.convolution.default"):
        assert kernel_probes.measured_temporaries(func, values) is None
    assert kernel_probes.known_temporaries(func, values) is None
    with warnings.catch_warnings():  # measured once: not run again (it would warn again), nor in a child process
        warnings.simplefilter("error")
        kernel_probes.measure_calls([(func, values)])


def test_matrix_products_are_measured_in_reduced_precision_only():
    """In fp32 BLAS's copies follow a rule (``cpu_temporaries._gemm_copies``); in bf16 and
    fp16 oneDNN converts and reorders the operands, which only a measurement follows."""
    from model_ir.torch.cpu_temporaries import measures

    mm = torch.ops.aten.mm.default
    for dtype, measured in ((torch.float32, False), (torch.bfloat16, True), (torch.float16, True)):
        values = [torch.randn(64, 32).to(dtype), torch.randn(32, 48).to(dtype)]
        assert measures(mm, values) is measured
        assert not measures(mm, [v.to("meta") for v in values])  # nor off the CPU (a capture for CUDA)
    kernel_probes._measured.clear()
    values = [torch.randn(64, 32, dtype=torch.bfloat16), torch.randn(48, 32, dtype=torch.bfloat16).t()]
    kept = []
    peak, _ = exact_peak_allocated_during(lambda: kept.append(mm(*values)))
    assert kernel_probes.measured_temporaries(mm, values) == peak - _storage_bytes(kept[0])


def test_a_capture_for_cuda_measures_nothing_on_the_cpu():
    """CUDA's kernels are not the CPU's: a capture for CUDA (here emulated on this CPU)
    runs no kernel to measure, and records no CPU temporaries."""
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import capture_step
    from model_ir.workspaces import CPU_TEMPORARY

    kernel_probes._measured.clear()
    torch.manual_seed(0)
    model = small_cnn()
    graph = capture_step(model, torch.randn(4, 3, 16, 16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         device="cuda").graph
    assert not kernel_probes._measured and not any(CPU_TEMPORARY in op.meta for op in graph.ops)


@pytest.mark.parametrize("made", ["fake", "meta"])
def test_a_model_planned_without_its_memory_is_not_measured(made):
    """A model built under FakeTensorMode or on the meta device is planned without its
    memory (``benchmarks/capture_1b.py``: a billion parameters): running its kernels
    would allocate real activations, so capture measures none (it used to fail on the
    fake one)."""
    from model_ir.testing.torch_models import small_cnn
    from model_ir.torch import TensorSpec, capture_step

    kernel_probes._measured.clear()
    if made == "fake":
        with FakeTensorMode():
            model = small_cnn()
    else:
        with torch.device("meta"):
            model = small_cnn()
    step = capture_step(model, TensorSpec((4, 3, 16, 16)), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert step.graph.ops and not kernel_probes._measured


_RSS_AFTER_PROBES = """
import ctypes, gc, torch
from model_ir.torch import kernel_probes
def rss():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
conv, w = torch.ops.aten.convolution.default, torch.randn(32, 32, 3, 3)
def probe(batch):
    kernel_probes.measured_temporaries(conv, [torch.empty(batch, 32, 64, 64, device="meta"), w, None, [1, 1],
                                              [1, 1], [1, 1], False, [0, 0], 1])
probe(1)  # the kernel's code and threads, the profiler's libraries (150 MiB, once): in memory before counting
gc.collect(); ctypes.CDLL(None).malloc_trim(0)
before = rss()
for batch in range(4, 20):  # distinct calls of 2-19 MiB arguments and results, the sizes glibc keeps
    probe(batch)
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_probes_hand_what_they_freed_back_to_the_system():
    """Probing allocates one call's arguments and results for a moment; glibc kept the freed
    chunks (below its mmap threshold, which rises as big chunks are freed) for good: here
    36 MiB (1.4 handed back), resnet18 b8's capture 262 MiB for an arena of 91."""
    if getattr(ctypes.CDLL(None), "malloc_trim", None) is None:
        pytest.skip("a C library without malloc_trim")
    done = subprocess.run([sys.executable, "-c", _RSS_AFTER_PROBES], capture_output=True, text=True, check=True)
    kept = int(done.stdout.split()[-1])
    assert kept < 8 * 2**20, kept / 2**20  # one call's arguments and results alone: 2 x 19 MiB


def test_the_cpu_memory_profile_keeps_stderr_quiet_but_for_the_profiled_code():
    """Kineto wrote "USDT: ... profiler_start/stop" (and, without a GPU, "ERROR: ...
    gpuGetDeviceCount failed") to stderr at every probe: noise in every command's output."""
    code = ("import os, torch\n"
            "from model_ir.torch.kernel_probes import cpu_memory_profile, raw_memory_events\n"
            "with cpu_memory_profile() as prof:\n"
            "    x = torch.ones(1000) + 1\n"
            "    os.write(2, b'from the profiled code\\n')\n"
            "assert raw_memory_events(prof)\n")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "from the profiled code\n"
    # without any stderr (2>&-), leaving the environment as it was; fd 2 moved by several
    # threads at once (one at a time: interleaved, they left it muted); torch runs one
    # profiler at a time, so the threads move fd 2 alone
    code = ("import os, sys, threading, time, torch\n"
            "from model_ir.torch.kernel_probes import _stderr_silenced, cpu_memory_profile\n"
            "with cpu_memory_profile():\n"
            "    torch.ones(10) + 1\n"
            "def work():\n"
            "    for _ in range(20):\n"
            "        with _stderr_silenced():\n"
            "            time.sleep(0.001)\n"
            "threads = [threading.Thread(target=work) for _ in range(4)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n"
            "assert 'KINETO_LOG_LEVEL' not in os.environ\n"
            "os.write(2, b'stderr works\\n') if sys.argv[1] == 'open' else None\n")
    proc = subprocess.run([sys.executable, "-c", code, "open"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stderr == "stderr works\n", proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, "closed"], stdout=subprocess.PIPE, stderr=None, text=True,
                          timeout=120, env=env, pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(2))
    assert proc.returncode == 0
