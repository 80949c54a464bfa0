"""What a CPU kernel allocates and frees within its call, measured by running it once.

Some kernels' temporaries follow more than their arguments' layouts. oneDNN's
convolutions reorder their operands into its blocked layout (channels padded to the
block of the CPU's instruction set), compute their results in it beside the dense
copies, and take scratchpads sized by the thread count; the slow (THNN) convolution
unfolds its input into column buffers. On a grid of 160 small configurations the
backward alone made 117 distinct sequences of allocations (AVX-512, 2 threads), and
another instruction set makes others: no rule written from the arguments follows them.
So capture measures them: each distinct call runs once on zeros of the traced shapes and
strides (on the model's own weights where the caller has them), under torch.profiler's
memory events, and its temporary is the peak of the running sum of its allocations and
frees less what it keeps (its results). One call's arguments, results and temporaries
are allocated for a moment, once per distinct call and thread count, and handed back to
the operating system after every few MiB of calls and at the end of capture
(:func:`release_freed_memory`).

torch.profiler cannot nest (a second session cancels the first one's trace): under a
running profiler the calls are measured in a child process (``python -m
model_ir.torch.kernel_probes``), which sees the same instruction set and thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.utils import _pytree as pytree

from model_ir.torch.node_args import UNANNOTATED_WRITES

#: Measured temporaries by call (:func:`call_key`).
_measured: dict[str, int] = {}
#: Bytes the calls measured since :func:`release_freed_memory` last ran took, about (their
#: arguments and temporaries).
_untrimmed = 0
#: Handed back once this many are: trimming after each small call costs the page faults
#: of allocating anew (densenet121's capture about 10% slower).
_TRIM_BYTES = 8 << 20
#: ``Graph.meta`` key: the CPU thread count the kernels' temporaries were measured with.
MEASURED_THREADS = "cpu_threads_measured"

#: Ops a step runs with grad enabled (on inputs that require none), as eager's forward
#: does: oneDNN's LSTM layer returns the workspace its backward reads only so.
_GRAD_MODE_RESULTS = frozenset({torch.ops.aten.mkldnn_rnn_layer.default})
#: Arguments a kernel sizes its temporaries by the values of, given as ones rather than
#: zeros: ``EmbeddingBag``'s max-mode backward gathers the bags whose ``bag_size`` is
#: nonzero (every bag of a 2-D input; zeros would make every bag empty and measure nothing).
_ONES = {"aten::_embedding_bag_backward": frozenset({"bag_size"})}


def call_key(func, values) -> str:
    """The call of aten overload ``func`` on argument ``values`` (one per schema argument,
    tensors fake or real) as JSON: what a child process needs to make it again, and the
    cache key (with the thread count, which sizes oneDNN's scratchpads)."""
    def spec(v):
        if isinstance(v, torch.Tensor):
            return {"shape": list(v.shape), "stride": list(v.stride()), "dtype": str(v.dtype).removeprefix("torch.")}
        if isinstance(v, (list, tuple)):
            return [spec(x) for x in v]
        return v

    return json.dumps([func._schema.name, func._overloadname, [spec(v) for v in values], torch.get_num_threads()],
                      default=repr)


def schema_values(func, args, kwargs) -> list:
    """``func``'s arguments in schema order, defaults filled in."""
    return [args[i] if i < len(args) else kwargs.get(a.name, a.default_value)
            for i, a in enumerate(func._schema.arguments)]


def measured_temporaries(func, values, real: Mapping | None = None) -> int | None:
    """Bytes the CPU kernel of ``func`` allocates and frees within its call on
    ``values`` (:func:`schema_values`), measured once per distinct call; ``real`` maps a
    fake argument to the real tensor it stands for (a weight: no copy is made; never one
    the op writes). None if the call failed, or under a running profiler (then
    :func:`measure_calls` measures it in a child process)."""
    global _untrimmed
    key = call_key(func, values)
    if key not in _measured and not torch._C._autograd._profiler_enabled():
        # Arguments the op may write (batch norm's running statistics) are zeros, never the model's.
        written = UNANNOTATED_WRITES.get(func._schema.name, ((),))[0]
        _measured[key] = _measure(func, [
            real_or_zeros(v, {} if i in written or (a.alias_info is not None and a.alias_info.is_write) else real or {})
            for i, (v, a) in enumerate(zip(values, func._schema.arguments))])
        _untrimmed += (_measured[key] or 0) + sum(t.numel() * t.element_size() for t in pytree.tree_leaves(values)
                                                  if isinstance(t, torch.Tensor))
        if _untrimmed >= _TRIM_BYTES:
            release_freed_memory()
    return _measured.get(key)


def measure_calls(calls: Iterable[tuple[object, list]]) -> None:
    """Measure the ``(func, values)`` calls not measured yet: here, or all in one child
    process under a running profiler."""
    missing = {}
    for func, values in calls:
        measured_temporaries(func, values)
        if (key := call_key(func, values)) not in _measured:
            missing[key] = None
    if _untrimmed:
        release_freed_memory()
    if not missing:
        return
    try:  # the child imports what this process does
        done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(list(missing)), text=True,
                              capture_output=True, check=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        _measured.update(zip(missing, json.loads(done.stdout.splitlines()[-1])))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        warnings.warn(f"could not measure {len(missing)} CPU kernels' temporaries in a child process "
                      f"(a profiler is running): the plan leaves them out ({e})", stacklevel=2)


def release_freed_memory() -> None:
    """Hand what the measured calls freed back to the operating system (glibc's
    ``malloc_trim``; nothing where the C library has none). glibc keeps freed chunks below
    its mmap threshold, which rises to 32 MiB as larger chunks are freed, for the process
    to reuse, for good: the CPU's counterpart of CUDA's caching allocator keeping what
    planning reserved. After every few MiB of calls, so that their freed memory is not kept
    while the next allocate beside it, and at the end of a capture (:func:`measure_calls`):
    resnet18 b8 train, whose arena is 91 MiB, grew VmRSS by 262 MiB during
    ``optimize(executor="reorder")`` and kept all of it; with this, a peak of 124 MiB and
    58 kept (45 with every call measured in a child process)."""
    global _untrimmed
    _untrimmed = 0
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def known_temporaries(func, values) -> int | None:
    """What :func:`measured_temporaries` measured for this call, None if it did not."""
    return _measured.get(call_key(func, values))


def real_or_zeros(v, real: Mapping):
    """Argument ``v`` (a fake tensor, a list of them, or a value) made real on the CPU:
    ``real[v]`` where it fits (the model's own weight, detached), else zeros of ``v``'s
    shape, strides and dtype."""
    if isinstance(v, (list, tuple)):
        return [real_or_zeros(x, real) for x in v]
    if not isinstance(v, torch.Tensor):
        return v
    r = real.get(v)
    with unset_fake_temporarily():
        if r is not None and r.device.type == "cpu" and (r.shape, r.stride(), r.dtype) == (v.shape, v.stride(),
                                                                                          v.dtype):
            return r.detach()
        return _zeros(v.shape, v.stride(), v.dtype)


def _zeros(shape, stride, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_strided(shape, stride, dtype=dtype).zero_()


@contextlib.contextmanager
def cpu_memory_profile():
    """torch.profiler with CPU memory events, without the lines Kineto writes to stderr
    as it starts and stops (``USDT: ... profiler_start``, and on a machine without a GPU
    ``ERROR: ... gpuGetDeviceCount failed``): noise in every command that measures kernels.
    What the profiled code writes to stderr is kept."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced(), _environment("KINETO_LOG_LEVEL", "5"):  # read as Kineto starts: no ERROR lines
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


#: One thread at a time moves file descriptor 2 (two interleaved would leave it muted).
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 (where C++ code writes) sent to the null device, then restored;
    Python warnings raised meanwhile are shown after, but for the profiler's own notices
    (older torch: "Profiler clears events at the end of each cycle")."""
    with _STDERR_LOCK, warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (started with 2>&-): nothing to silence
            saved = None
        try:
            if saved is not None:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 2)
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
    for w in raised:
        if os.path.join("torch", "profiler") not in w.filename:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def _environment(name: str, value: str):
    """``os.environ[name]`` set to ``value`` unless the user set it, then put back."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _measure(func, values) -> int | None:
    """The peak of new CPU bytes while ``func(*values)`` runs, less what its results hold
    (the profiler's raw memory events, in time order); None, with a warning, if it fails."""
    arguments = func._schema.arguments
    ones = _ONES.get(func._schema.name, ())
    grad_mode = torch.enable_grad() if func in _GRAD_MODE_RESULTS else torch.no_grad()
    try:
        with unset_fake_temporarily(), grad_mode, torch.autocast("cpu", enabled=False):
            values = [torch.ones_like(v) if a.name in ones and isinstance(v, torch.Tensor) else v
                      for v, a in zip(values, arguments)]
            with cpu_memory_profile() as prof:
                result = func(*[v for v, a in zip(values, arguments) if not a.kwarg_only],
                              **{a.name: v for v, a in zip(values, arguments) if a.kwarg_only})
            del result
    except RuntimeError as e:
        warnings.warn(f"could not run {func} to measure its CPU temporaries: the plan leaves them out ({e})",
                      stacklevel=3)
        return None
    peak, final = running_peak(raw_memory_events(prof))
    return peak - final


def raw_memory_events(prof) -> list[tuple[int, int]]:
    """``(time, bytes)`` of every allocation (positive) and free of the CPU allocator that
    profile ``prof`` recorded (its raw ``[memory]`` instant events, inside operators too)."""
    cpu = torch._C._autograd.DeviceType.CPU
    return [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == cpu]


def running_peak(changes) -> tuple[int, int]:
    """``(peak, final)`` of the running sum of ``(time, bytes)`` changes in time order (ties
    in the order given), from 0."""
    current = peak = 0
    for _, delta in sorted(changes, key=lambda c: c[0]):
        current += delta
        peak = max(peak, current)
    return peak, current


def _from_spec(spec):
    if isinstance(spec, dict):
        return _zeros(spec["shape"], spec["stride"], getattr(torch, spec["dtype"]))
    if isinstance(spec, list):
        return [_from_spec(s) for s in spec]
    return spec


def _main() -> None:
    """Measure the calls given as a JSON list of :func:`call_key` on stdin; print their
    temporaries as a JSON list."""
    out = []
    for key in json.loads(sys.stdin.read()):
        name, overload, specs, threads = json.loads(key)
        torch.set_num_threads(threads)
        namespace, op = name.split("::")
        func = getattr(getattr(getattr(torch.ops, namespace), op), overload or "default")
        out.append(_measure(func, [_from_spec(s) for s in specs]))
    print(json.dumps(out))


if __name__ == "__main__":
    _main()
