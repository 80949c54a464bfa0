"""``optimize()``: capture a training step, plan it, and return it as a callable."""

from __future__ import annotations

import contextvars
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence

import attrs
import torch
import torch.utils._pytree as pytree

from model_ir.arguments import check_type, describe
from model_ir.errors import WrongTypeError
from model_ir.formatting import human_bytes
from model_ir.json_format import load_plan
from model_ir.plan import Plan
from model_ir.plugins import invalid_answer
from model_ir.torch import CapturedStep, capture_step, init_optimizer_state
from model_ir.torch.errors import warn_user
from model_ir.torch.kernel_probes import MEASURED_THREADS
from model_ir.torch.optimizer_values import post_hooks, run_post_hooks
from model_ir.torch.step import reseed_optimizer_state, seed_values
from model_ir.torch.tracing import describe_call, flatten_batch
from model_ir.workspaces import ARENA_TEMPORARIES
from model_runtime.beside_arena import (CHOICES, above_budget, above_eager, auto_choices, held_by,
                                       least_memory_executor)
from model_runtime.binding import Binder
from model_runtime.cuda_graphs import CudaRecorder, GraphedRun, device_blocker, graph_blockers
from model_runtime.errors import BudgetError, ReoptimizeError, RuntimeLayerError
from model_runtime.executors import AUTO_EXECUTOR, executor_named
from model_runtime.planning import (
    DEFAULT_TIME_LIMIT, ORDER_EXECUTORS, check_fallback_results, check_saved_plan, device_alignment, make_plan,
)
from model_runtime.program import CompiledProgram


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def expandable_segments(device: torch.device) -> bool:
    """Whether PyTorch's caching allocator on ``device`` runs with expandable segments
    (``expandable_segments:True`` in ``PYTORCH_ALLOC_CONF`` or ``PYTORCH_CUDA_ALLOC_CONF``,
    or set with ``torch.cuda.memory._set_allocator_settings``): the plan's figures then
    simulate that setting. Always False off CUDA."""
    if device.type != "cuda":
        return False
    settings = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    text = settings() if settings is not None else \
        os.environ.get("PYTORCH_ALLOC_CONF") or os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or ""
    pairs = dict(item.split(":", 1) for item in text.replace(" ", "").split(",") if ":" in item)
    return pairs.get("expandable_segments", "").lower() == "true"


#: Plans one :class:`OptimizedStep` may make for new input shapes, modes or optimizer structures.
MAX_PLANS = 8

class MemoryWarning(UserWarning):
    """``optimize(executor="auto")`` found no executor that holds less than eager PyTorch
    (simulated, CUDA): the step runs, with the lesser of the two. Also: a CPU step run
    with another thread count than its plan's kernels were measured with."""


class ReplanWarning(UserWarning):
    """An optimized step met a call its plans do not cover and planned a new step for it."""


class OptimizedStep:
    """One planned training (or inference) step of a model, callable like the model.

    ``step(*inputs, targets=(), **kw_inputs)`` runs forward, loss, backward and the
    optimizer update on a new batch structured and shaped like the example inputs,
    updates the model's parameters and buffers and the optimizer's state in place, and
    returns the loss (train), ``(loss, outputs)`` (train, optimized with
    ``return_outputs=True``: ``outputs`` structured like the eager model's output) or the
    model's output tensors (eval: one tensor, or a tuple of the flattened output
    tensors). Parameters' ``.grad`` are not set (unless optimized with ``set_grads=True``).
    :attr:`before_step_result` holds what ``before_step`` returned at the last call (e.g.
    the gradient norm of ``clip_grad_norm_``, to log), None when it returned no tensor.

    A call that the plan does not cover (a batch of another shape, such as a short last
    batch; the model switched between ``train()`` and ``eval()`` when ``optimize`` was
    called without ``train=``; a submodule switched mode while the model trains, such as
    ``bn.eval()``, a module's plain attribute (``dropout.p``) or its hooks changed; an
    optimizer change a plan cannot absorb, such as weight
    decay turned on; a parameter frozen or unfrozen with ``requires_grad_``, or taken out
    of or put into the optimizer) gets a plan of its own, made on first use with a
    :class:`ReplanWarning` naming the reason and kept for later calls, as torch.compile
    recompiles; up to ``max_plans`` plans, then :class:`ReoptimizeError`. :attr:`plans`
    lists them (save them to pass ``plan=[...]`` to a later ``optimize``). A parameter
    replaced by one the optimizer does not hold (``model.fc.weight = nn.Parameter(...)``)
    is a :class:`RuntimeLayerError`: eager would not update it, and no plan can be made.
    """

    def __init__(self, model, optimizer, captured: CapturedStep, plan: Plan, program: CompiledProgram,
                 device: torch.device, *, replan: Callable | None = None, follow_mode: bool = False,
                 max_plans: int = MAX_PLANS, scaler=None, cuda_graph: bool = False, functions=(),
                 seeded: tuple[list, list] | None = None):
        self.model = model
        self.optimizer = optimizer
        self.captured = captured
        self.plan = plan
        self.program = program
        self.device = device
        self.scaler = scaler
        self.binder = Binder(captured, model, optimizer, device, scaler, functions)
        self.graphed: GraphedRun | None = None
        if cuda_graph:
            blockers = graph_blockers(self.binder, program, device)
            if blockers:
                raise RuntimeLayerError("cuda_graph=True: this step cannot be replayed as a CUDA graph: "
                                        + "; ".join(blockers))
            self.graphed = GraphedRun(program, self.binder, CudaRecorder(device))
        self._run = program.run if self.graphed is None else self.graphed.run
        self._replan = replan
        self._follow_mode = follow_mode
        self.max_plans = max_plans
        self.variants: list[OptimizedStep] = [self]
        self._last = self
        self._threads_warned = False
        self.before_step_result = None
        # (parameters, hyper-parameters): the optimizer state optimize() created, until an update ran from it
        self._seeded = seeded

    @property
    def executor(self) -> str:
        return self.program.executor

    @property
    def train(self) -> bool:
        return self.captured.train

    @property
    def return_outputs(self) -> bool:
        """Whether a training step returns ``(loss, outputs)`` rather than the loss."""
        return self.captured.return_outputs

    @property
    def fallbacks(self):
        """Ops that could not write into their arena slot directly (arena executor)."""
        return self.program.fallbacks

    def bind(self, *args, targets=(), **kwargs) -> list[torch.Tensor]:
        """The flat input tensors of the captured step for this call (checked)."""
        return self.binder.bind(args, kwargs, targets)

    @property
    def plans(self) -> list[Plan]:
        """The plans of every variant made so far, this step's first."""
        return [v.plan for v in self.variants]

    def _bind_call(self, calls) -> list:
        """The step's input tensors for ``calls``, the micro-batches' ``(args, kwargs, targets)``."""
        if self._follow_mode and self.model.training != self.train:
            mode = "training" if self.model.training else "eval"
            raise ReoptimizeError(f"the model is in {mode} mode and the step was planned for the other")
        return self.binder.bind_micro_batches(calls)

    def _variant_for(self, calls) -> tuple[OptimizedStep, list]:
        """The variant that covers ``calls`` (one micro-batch's ``(args, kwargs, targets)``
        per accumulation step), planned now, for the first one's shapes, if none does."""
        try:
            return self._last, self._last._bind_call(calls)
        except ReoptimizeError as first:
            reason = first
        for v in self.variants:
            if v is not self._last:
                try:
                    return v, v._bind_call(calls)
                except ReoptimizeError:
                    pass
        args, kwargs, targets = calls[0]
        packed = self._packed_batch(args, kwargs)
        if packed:
            raise RuntimeLayerError(packed)
        if self._replan is None:
            raise reason
        if self._trains() and not targets and any(v.train and v.captured.targets_spec.num_leaves
                                                  for v in self.variants):
            raise RuntimeLayerError("this call passes no targets, and the step's loss takes some (optimize() was "
                                    "given targets=): pass the model's inputs positionally (or by keyword) and the "
                                    f"loss targets as targets=, e.g. step(x, targets=(y,)) ({reason})")
        if len(self.variants) >= self.max_plans:
            raise ReoptimizeError(f"{reason}; this step already has {len(self.variants)} plans (max_plans), one "
                                  "for each input shape, mode or constant it was called with: pass a larger max_plans "
                                  "(and pad sequences to a fixed length or to a few, pad_to_multiple_of)")
        if args and kwargs:
            raise ReoptimizeError(f"{reason}; a new plan needs the inputs all positional or all by keyword")
        warnings.warn(f"planning a new step ({len(self.variants) + 1} of at most {self.max_plans}): {reason}",
                      ReplanWarning, stacklevel=3)
        variant = self._replan(kwargs if kwargs else args, targets, [v.plan for v in self.variants])
        self.variants.append(variant)
        return variant, variant._bind_call(calls)

    def _packed_batch(self, args: tuple, kwargs: dict) -> str | None:
        """What to say of ``step(batch)`` where the step takes the batch's items as its
        arguments, as ``optimize`` unpacked the example (``model(*batch)``,
        ``model(**batch)``): not a reason for a plan of its own (None: not that)."""
        if kwargs or len(args) != 1 or not isinstance(args[0], (tuple, list, dict)):
            return None
        batch = args[0]
        unpacked = flatten_batch(((), dict(batch)) if isinstance(batch, dict) else (tuple(batch), {}))[1]
        if not any(unpacked == v.captured.inputs_spec for v in self.variants):
            return None
        star = "**" if isinstance(batch, dict) else "*"
        return (f"the step is called as {describe_call(flatten_batch((args, {}))[1])}, the batch's items packed in "
                f"one {type(batch).__name__}; it takes them as the model does, {describe_call(unpacked)} "
                f"(* a tensor or value): call step({star}batch)")

    def _check_autocast(self) -> None:
        """A call inside ``torch.autocast`` would cast the captured aten ops again (the
        reorder executor failed in a kernel, the arena silently computed neither the plan
        nor eager's AMP step): refused, with the way to get mixed precision."""
        if torch.is_autocast_enabled(self.device.type):
            raise RuntimeLayerError(
                "the optimized step is called inside torch.autocast: call it outside, and for mixed precision "
                "pass autocast=torch.bfloat16 (or torch.float16 with scaler=) to model_runtime.optimize, which "
                "captures the forward pass and the loss under autocast as the AMP recipe runs them")

    def _check_threads(self) -> None:
        """The plan's CPU kernel temporaries were measured with the thread count of
        capture (oneDNN sizes its scratchpads by it): a step run with another count may
        take other memory than the plan says. Warned once."""
        measured = self.plan.graph.meta.get(MEASURED_THREADS)
        if measured is None or measured == torch.get_num_threads() or self._threads_warned:
            return
        self._threads_warned = True
        warnings.warn(f"the plan's CPU kernel temporaries were measured with {measured} threads and the step runs "
                      f"with {torch.get_num_threads()} (torch.set_num_threads): oneDNN's scratchpads follow the "
                      "thread count, so the step may take other memory than the plan says; optimize() again with "
                      "the thread count it will run with", MemoryWarning, stacklevel=3)

    def _trains(self) -> bool:
        """Whether a call now runs a training step (the model's mode, when the step follows it)."""
        return self.model.training if self._follow_mode else self.train

    def _check_grad_mode(self) -> None:
        """A training step under ``torch.no_grad()`` (a validation loop that forgot
        ``model.eval()``) would update the model, where eager's backward fails: refused
        (before any new plan is made for the call)."""
        if self._trains() and not torch.is_grad_enabled():
            raise RuntimeLayerError(
                "a training step (forward, backward and update) is called with gradients disabled "
                "(torch.no_grad or inference_mode), where eager's backward fails: for a forward pass alone call "
                "model.eval() first (a step optimized without train= then runs the model's eval step), else call "
                "it outside no_grad")

    def __call__(self, *args, targets=(), **kwargs):
        self._check_autocast()
        self._check_grad_mode()
        self._check_threads()
        if self.captured.accumulation_steps > 1:
            raise ReoptimizeError(f"this step accumulates gradients over {self.captured.accumulation_steps} "
                                  "micro-batches: call step.accumulate([batch, ...], targets=[...])")
        self._reseed()
        step, tensors = self._variant_for([(args, kwargs, targets)])
        self._last = step
        outputs = self._run_step(step, tensors)
        if step.train:
            self._seeded = None  # an update ran from the state (an eval call leaves it to be made again)
            if step.captured.return_outputs:
                return outputs[0], step.captured.model_outputs(outputs[1:])
            return outputs[0]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def accumulate(self, batches: Sequence, targets: Sequence | None = None) -> tuple:
        """One update from ``accumulation_steps`` micro-batches (gradient accumulation).

        ``batches[k]``: the k-th micro-batch, given like the example inputs (a tensor, a
        tuple of positional arguments or a dict of keyword arguments); ``targets[k]``:
        its loss targets (a tuple). Returns the micro-batches' losses. As in eager, each
        micro-batch's gradients add up in the parameters' gradients before the update:
        divide in ``loss_fn`` for a mean.
        """
        self._check_autocast()
        self._check_grad_mode()
        self._check_threads()
        from model_ir.torch.tracing import split_example_inputs

        targets = [()] * len(batches) if targets is None else list(targets)
        if len(targets) != len(batches):
            raise ReoptimizeError(f"{len(batches)} micro-batches but {len(targets)} targets")
        if len(batches) != self.captured.accumulation_steps:  # every variant has the same count
            raise ReoptimizeError(f"the step was optimized for {self.captured.accumulation_steps} micro-batch(es) "
                                  f"per update, got {len(batches)}")
        calls = [(*split_example_inputs(b), t) for b, t in zip(batches, targets)]
        # One plan covers all the micro-batches of an update, all shaped alike (a new plan
        # is made for the first one's shapes): refused before planning for nothing.
        shapes = [_leaf_shapes(call) for call in calls]
        odd = next((k for k, s in enumerate(shapes) if s != shapes[0]), None)
        if odd is not None:
            raise ReoptimizeError(f"micro-batch {odd} is shaped otherwise than micro-batch 0 ({shapes[odd]} vs "
                                  f"{shapes[0]}): the micro-batches of one update must have the same shapes and "
                                  "dtypes (pad them, or run a short last batch as an update of its own)")
        self._reseed()
        step, tensors = self._variant_for(calls)
        self._last = step
        outputs = self._run_step(step, tensors)
        self._seeded = None
        return tuple(outputs[:step.captured.accumulation_steps])

    def _reseed(self) -> None:
        """Before the first call runs: the optimizer state optimize() created (eager's
        first ``step()`` would create it) made again if the hyper-parameters it starts
        from changed since (a ``LambdaLR`` made after ``optimize`` scales ``lr``, which
        Rprop's step sizes start from), as eager's first step would see them."""
        if self._seeded is not None and self.optimizer is not None:
            reseed_optimizer_state(self.optimizer, *self._seeded)

    def _run_step(self, step: OptimizedStep, tensors: list) -> list:
        """Run ``step`` (gradients into ``.grad`` with ``set_grads``, ``before_step``'s
        result kept); its other outputs. Then, as eager's ``optimizer.step()`` after its
        update, the optimizer's step post-hooks (an EMA of the weights, a log), read at
        each call as eager does; none after an update the GradScaler skipped (a non-finite
        gradient: its scale backed off), as ``scaler.step`` then skips ``step()``."""
        hooks = step.train and self.optimizer is not None and post_hooks(self.optimizer)
        scale = self.scaler.get_scale() if hooks and self.scaler is not None else None
        outputs = self._before_step_result(step, step._set_grads(step._run(tensors)))
        if hooks and (scale is None or self.scaler.get_scale() >= scale):
            run_post_hooks(self.optimizer)
        return outputs

    def _before_step_result(self, step: OptimizedStep, outputs: list) -> list:
        """Keep what ``before_step`` returned in :attr:`before_step_result`; the other outputs."""
        n = step.captured.before_step_outputs
        if not n:
            return outputs
        self.before_step_result = step.captured.before_step_result(outputs[len(outputs) - n:])
        return outputs[:len(outputs) - n]

    def _set_grads(self, outputs: list) -> list:
        """Move the returned gradients (``set_grads``) into ``.grad``; the other outputs."""
        names = self.captured.returned_grads
        if not names:
            return outputs
        params = dict(self.model.named_parameters())
        for name, grad in zip(names, outputs[len(outputs) - len(names):]):
            params[name].grad = grad
        if self.optimizer is not None:
            # As eager's optimizer.zero_grad() (set_to_none) before backward: a parameter of the
            # optimizer that gets no gradient in this step (frozen since) holds none, not an old one.
            returned = {id(params[name]) for name in names}
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in returned:
                        p.grad = None
        return outputs[:len(outputs) - len(names)]

    def figures(self) -> dict:
        """The plan's figures (bytes, seconds) plus the executor's fallback counts."""
        out = dict(self.plan.figures)
        out["executor"] = self.executor
        if self.program.arena is not None:
            out["arena_allocated_bytes"] = self.program.arena.untyped_storage().nbytes()
            out["out_variant_ops"] = self.program.out_ops
            out["fallback_ops"] = len(self.program.fallbacks)
            out["fallback_bytes"] = sum(f.bytes for f in self.program.fallbacks)
            out["scratch_peak_bytes"] = max(self.program.scratch.values(), default=0)
        if self.graphed is not None:
            out["cuda_graph_recordings"] = self.graphed.recordings
        return out

    def report(self) -> str:
        """A few lines comparing eager and optimized memory (simulated figures, bytes)."""
        f = self.figures()
        mode = "training step" if self.train else "inference step"
        lines = [
            f"{self.captured.graph.name} {mode}: {f['ops']} ops, executor {self.executor} on {self.device}",
            f"  persistent (parameters, state, batch): {human_bytes(f['persistent_bytes'])}",
            f"  peak live bytes, eager order:   {human_bytes(f['eager_peak_bytes'])}",
            f"  peak live bytes, planned order: {human_bytes(f['peak_bytes'])}"
            f" ({_change(f['peak_bytes'], f['eager_peak_bytes'])}{_bound(f, 'lower_bound_bytes')}"
            + (f", gap {100 * f['schedule_gap']:.1f}%)" if "schedule_gap" in f else ")")
            + (f"; the {f['order_source']} order, as low a peak as the scheduler's and less memory for "
               "the executors" if f.get("order_source", "scheduler") != "scheduler" else ""),
        ]
        if f.get("memory_budget") is not None:
            overhead = f.get("recompute_overhead")
            lines.append(f"  memory budget {human_bytes(f['memory_budget'])}: {f.get('recomputed_ops', 0)} ops "
                         "recomputed" + (f" ({100 * overhead:.1f}% of the step's FLOPs)" if overhead is not None
                                         else "") + "; no order without recomputation peaks below "
                         f"{human_bytes(f['reorder_lower_bound_bytes'])}")
        if "arena_bytes" in f:
            notes = [f["placement_status"]] if "placement_status" in f else []
            notes += [_bound(f, "arena_lower_bound_bytes").removeprefix("; ")] if "arena_lower_bound_bytes" in f else []
            lines.append(f"  planned arena: {human_bytes(f['arena_bytes'])} for the buffers it holds"
                         + (f" ({'; '.join(notes)})" if notes else ""))
        if "reorder_transient_bytes" in f:
            lines.append(self._executors_line(f))
        if self.program.arena is not None:
            fb = self.program.fallbacks
            copied = sum(x.copied for x in fb)
            lines.append(
                f"  {f['out_variant_ops']} ops write into the arena (out= overloads, slot writes); "
                f"{len(fb)} fall back (run as in eager; their results: {human_bytes(f['fallback_bytes'])} in all)"
            )
            lines.append(f"  beside the arena, in PyTorch's allocator (simulated): "
                         f"{human_bytes(f.get('beside_arena_bytes', 0))} (fallback results"
                         + (f", library workspaces {human_bytes(f['library_workspace_bytes'])} alone"
                            if f.get("library_workspace_bytes") else "") + ")")
            if copied:
                lines.append(f"    results of {copied} copied into the arena right after their op "
                             f"({human_bytes(f.get('fallback_copied_bytes', 0))}; at most "
                             f"{human_bytes(f.get('fallback_copy_bytes', 0))} beside it at a time)")
            if copied < len(fb):
                reserved = human_bytes(f.get("unplaced_caching_allocator_bytes", 0))
                # (the CPU's allocator holds the live bytes: no caching allocator there)
                caching = f", caching allocator (simulated) {reserved}" if self.device.type == "cuda" else ""
                lines.append(f"    results of {len(fb) - copied} left to PyTorch's allocator until their last use "
                             f"(live peak {human_bytes(f.get('unplaced_live_peak_bytes', 0))}{caching})")
            counts: dict[str, int] = {}
            for x in fb:
                counts[x.target] = counts.get(x.target, 0) + 1
            if counts:
                lines.append("    fallbacks: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        if self.graphed is not None:
            lines.append(f"  replayed as a CUDA graph (recorded {self.graphed.recordings} time(s) so far)")
        return "\n".join(lines)

    def _executors_line(self, f: dict) -> str:
        """Eager against each executor, persistent buffers included (simulated): on CUDA
        what the caching allocator reserves, elsewhere the live bytes."""
        held = {name: f["persistent_bytes"] + nbytes for name in CHOICES
                if (nbytes := held_by(f, name)) is not None}
        if "eager_reserved_bytes" in f:
            setting = ", expandable segments" if f.get("expandable_segments") else ""
            head, eager = f"reserved (simulated{setting})", f["eager_reserved_bytes"]
        elif "program_transient_bytes" in f:
            # eager's order and frees with the kernels' temporaries, as the executors' figures
            # have them (eager_peak_bytes leaves those out: the program executor read +16%),
            # and .grad held to the end of the step (a plan saved before has no such figure)
            transient = f.get("eager_transient_bytes", f["program_transient_bytes"])
            head, eager = "live bytes at the peak (simulated)", f["persistent_bytes"] + transient
        else:
            head, eager = "live bytes at the peak (simulated)", f["eager_peak_bytes"]
        cells = [f"{name} executor {human_bytes(nbytes)} ({_change(nbytes, eager)}"
                 f"{', runs' if name == self.executor else ''})" for name, nbytes in held.items()]
        return f"  {head}: eager {human_bytes(eager)}; " + "; ".join(cells)

    def __repr__(self) -> str:
        f = self.plan.figures
        return (f"OptimizedStep({self.captured.graph.name}, executor={self.executor!r}, "
                f"peak={f['peak_bytes']} B, eager_peak={f['eager_peak_bytes']} B)")


def _bound(figures: dict, key: str) -> str:
    # A plan made elsewhere (plan=...) may carry no solver bounds.
    return f"; lower bound {human_bytes(figures[key])}" if key in figures else ""


def _change(new: float, old: float) -> str:
    return "n/a" if not old else f"{100.0 * (new - old) / old:+.1f}%"


# Plans are made on first use too (a replan inside the caller's torch.inference_mode()):
# an arena made there would be an inference tensor, which no later step may write.
@torch.inference_mode(False)
def optimize(model: torch.nn.Module, example_inputs, *, loss_fn: Callable | None = None,
             optimizer: torch.optim.Optimizer | None = None, executor: str = "auto",
             time_limit: float | None = None, targets=(), train: bool | None = None,
             schedule_method: str = "auto", place_method: str = "auto",
             granularity: int | None = None, plan: Plan | str | os.PathLike | None = None,
             before_step: Callable | None = None, return_outputs: bool = False,
             autocast: torch.dtype | None = None, max_plans: int = MAX_PLANS,
             set_grads: bool = False, accumulation_steps: int = 1,
             scaler: torch.amp.GradScaler | None = None, memory_budget: int | None = None,
             cuda_graph: bool = False, fallback_results: str = "auto") -> OptimizedStep:
    """Capture one step of ``model``, plan its op order and buffer addresses, and
    return it as a callable :class:`OptimizedStep`.

    ``example_inputs``: as for :func:`model_ir.torch.capture_step` (a tensor, a tuple
    of positional arguments or a dict of keyword arguments; only shapes and dtypes
    matter). ``targets``: example extra arguments of ``loss_fn(output, *targets)``.
    ``train`` defaults to ``model.training``; in eval mode the step is forward only.
    A training step keeps every module's train/eval mode as it is, as eager's does
    (``train=True`` on a model in eval mode trains it with BatchNorm's running
    statistics and no dropout).
    ``executor``: ``"auto"`` (default: of the three below, the one whose simulated
    memory beside the persistent buffers is smallest, see
    :func:`model_runtime.beside_arena.least_memory_executor`; the arena with
    ``cuda_graph=True`` or ``fallback_results="copied"``; not the program executor
    under ``memory_budget``), ``"arena"`` (planned order
    and addresses), ``"reorder"`` (planned order, PyTorch's allocator), ``"program"``
    (eager's order and frees, PyTorch's allocator: where no plan holds less) or a
    plugin's.
    ``time_limit``: seconds for each solver (scheduling, placement; default 10).
    ``granularity``: bytes every buffer is rounded up to (default: 512 on CUDA, 64 on
    CPU). ``plan``: a plan saved earlier
    (``model_ir.save_plan(step.plan, path)``, e.g. solved once with a long time limit),
    a :class:`~model_ir.Plan` or a path to its JSON file; it is used instead of solving
    again after checking that it was made for this very step (same ops and buffers)
    and that its order and placement are valid. ``before_step(params)`` runs between
    backward and the optimizer update and is captured with the step (``params``:
    parameter name to tensor with ``.grad`` set; e.g. gradient clipping,
    ``lambda ps: torch.nn.utils.clip_grad_norm_(ps.values(), 1.0)``). The optimizer's
    step post-hooks run after each update, as eager's ``step()`` runs them; its pre-hooks
    cannot (a warning says so).
    ``return_outputs=True``: a training step returns ``(loss, outputs)``, ``outputs``
    being the model's output of that step's forward pass (detached), structured like
    the eager model's (a tensor, a tuple, list or dict of tensors; non-tensor leaves
    are the captured values; a container ``torch.utils._pytree`` does not know comes
    back as a flat tuple of its tensors). The output buffers are then step outputs of
    the plan: alive to the end of the step (the planned peak may grow), allocated
    outside the arena and owned by the caller (still valid after the next step). No
    effect in eval mode, whose step always returns the outputs.
    ``plan`` may also be a list of plans (e.g. ``step.plans`` saved earlier): each new
    step uses the first that fits it and solves when none does. ``max_plans``: how many
    plans the step may make for calls its plans do not cover (see :class:`OptimizedStep`).
    ``set_grads=True`` (train mode): after each call the parameters' ``.grad`` hold the
    step's gradients (as the optimizer saw them), for logging, gradient norms or a
    hand-written update; they are step outputs of the plan, alive to its end (the
    planned peak accounts for them) and owned by the caller.
    ``accumulation_steps=N``: gradient accumulation, one update from N micro-batches
    shaped like the example (:meth:`OptimizedStep.accumulate`); the plan covers the N
    forward and backward passes and the update, and may interleave them.
    ``autocast`` (``torch.bfloat16``, or ``torch.float16`` on CUDA): mixed precision as
    in PyTorch's AMP recipe, the forward pass and the loss under
    ``torch.autocast(device_type, dtype)`` and the backward and update outside it; the
    casts are planned buffers and the results are bitwise those of that eager loop.
    ``scaler`` (a ``torch.amp.GradScaler``, with fp16 autocast): each call does what
    ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()`` does
    (gradients unscaled before ``before_step``, as after ``scaler.unscale_``), the
    scaler's scale and growth tracker updated in place; an update with a non-finite
    gradient is skipped, decided by one ``.item()`` as in eager. The plan's figures
    assume the update runs.
    ``memory_budget`` (bytes; the simulator's peak, persistent buffers and the kernels'
    temporaries and per-call workspaces included: :func:`model_runtime.planning.budget_graph`):
    the plan may run forward ops again in the backward pass (recomputation, as activation
    checkpointing does, chosen op by op together with the order) to keep the peak
    under it, at the fewest recomputed FLOPs it finds; ``step.plan.figures`` say what
    it costs (``recompute_flops``, ``recompute_overhead``). A recomputed random op
    (dropout) replays its first run's draws, so results stay bitwise eager's. Raises
    :class:`BudgetError`, with the best peak found and the lower bound of any plan, when
    none fits. What else the executor holds beside the planned buffers (cuBLAS's
    workspace, the arena executor's fallbacks' results): a :class:`MemoryWarning` says
    when that goes above the budget, and by how much (``step.figures()`` has each figure). Not
    with ``executor="program"`` (eager's order). A plan made under a budget and saved is
    reused by ``plan=`` with or without ``memory_budget`` (with it, its peak must fit), and so
    is one made without a budget (the step is captured as each plan was made).
    ``cuda_graph=True`` (CUDA): the step is recorded as a CUDA graph on its second call
    and replayed from then on, one launch instead of one per op (see
    :mod:`model_runtime.cuda_graphs` for what it costs and refuses); recorded again when
    a hyper-parameter changes or a parameter or state tensor is replaced.
    ``fallback_results`` (arena executor): where the results of the ops that cannot
    write into the arena live, ``"auto"`` (the least memory), ``"outside"`` (left to
    PyTorch's allocator: no copies, eager's speed) or ``"copied"`` (into the arena right
    after their op); see :func:`model_runtime.make_plan`.
    """
    log = logging.getLogger("model_runtime")
    t0 = time.perf_counter()
    if not isinstance(model, torch.nn.Module):
        raise RuntimeLayerError(f"optimize() takes a torch.nn.Module, got {type(model).__name__}; "
                                "wrap a function in a module whose forward calls it")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise RuntimeLayerError(f"optimizer= takes a torch.optim.Optimizer, got {type(optimizer).__name__}")
    _check_flags(train=train, return_outputs=return_outputs, set_grads=set_grads, cuda_graph=cuda_graph)
    _check_max_plans(max_plans)
    _check_plan_argument(plan)
    _check_budget(memory_budget, executor)
    # Saved plans are read now: the step is captured as they were (recomputable when made under a budget,
    # not when made without one, even if a budget is given now: their peak is checked against it).
    if isinstance(plan, (list, tuple)):
        plan = [load_plan(p) if isinstance(p, (str, os.PathLike)) else p for p in plan]
    elif isinstance(plan, (str, os.PathLike)):
        plan = load_plan(plan)
    given = plan if isinstance(plan, list) else [] if plan is None else [plan]
    functional = (any(p.graph.meta.get("functional_inplace") for p in given) if given
                  else memory_budget is not None)
    device = model_device(model)
    if torch.is_autocast_enabled(device.type):
        raise RuntimeLayerError("model_runtime.optimize is called inside torch.autocast: call it outside, with "
                                "autocast=torch.bfloat16 (or torch.float16 with scaler=) for mixed precision")
    train_given = train is not None
    if not train_given and not model.training and optimizer is not None and _REPLANNING.get() is None:
        warn_user("the model is in eval mode (as from_pretrained leaves it): this step runs the forward pass only, "
                  "and the optimizer is not used until model.train(); call model.train() before training (or pass "
                  "train=True to train it in eval mode, as eager's backward would)")
    train = model.training if train is None else train
    targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
    check_fallback_results(fallback_results)
    # "auto" plans for the arena and may run the plan with the reorder executor instead.
    auto = executor == AUTO_EXECUTOR and not cuda_graph and fallback_results != "copied"
    chosen_name = "arena" if executor == AUTO_EXECUTOR else executor
    chosen = executor_named(chosen_name)
    copies = getattr(chosen, "copies_unplaced", False)
    if fallback_results == "copied" and not copies:
        raise RuntimeLayerError(f"fallback_results='copied': executor {executor!r} does not copy results into an "
                                "arena (the arena executor does)")
    if cuda_graph and device_blocker(device):  # before planning; the other reasons need the compiled step
        raise RuntimeLayerError(f"cuda_graph=True: {device_blocker(device)}")
    captured = capture_step(
        model, example_inputs, loss_fn=loss_fn, optimizer=optimizer if train else None, train=train,
        granularity=device_alignment(device.type) if granularity is None else granularity, targets=targets,
        before_step=before_step, return_outputs=return_outputs and train, autocast=autocast,
        return_grads=set_grads and train, accumulation_steps=accumulation_steps,
        scaler=scaler if train else None,
        # Under a budget, the forward pass is made recomputable (in-place activations functional, dropout masks).
        functional_inplace=functional,
    )
    log.info("captured %s: %d ops, %d buffers (%.2f s)", captured.graph.name, len(captured.graph.ops),
             len(captured.graph.buffers), time.perf_counter() - t0)
    if train and optimizer is not None and not set_grads:
        _warn_parameters_outside(model, optimizer, captured.gradients)
    seeded = None
    if optimizer is not None and train:
        # Create the optimizer's lazy state now, so the step updates it from the first call:
        # for the parameters whose update the step holds (eager creates none for the others).
        named = dict(model.named_parameters())
        stateful = [named[n] for n in captured.stateful_parameters()]
        fresh = [p for p in stateful if not optimizer.state.get(p)]
        seeded = (fresh, seed_values(optimizer)) if fresh else None
        init_optimizer_state(optimizer, stateful)
    # An executor may leave some transient buffers to PyTorch's allocator (the arena's
    # fallbacks): the plan must know them before placing.
    unplaced = chosen.unplaced(captured, device) if hasattr(chosen, "unplaced") else frozenset()
    graph = captured.graph
    # and what its own code takes for some ops, instead of their kernels
    if temporaries := getattr(chosen, "temporaries", lambda *_: None)(captured, device):
        graph = attrs.evolve(graph, meta={**graph.meta, ARENA_TEMPORARIES: temporaries})
    expandable = expandable_segments(device)

    def fitted(saved) -> Plan:
        """``saved`` (a plan, its file read above) checked to be made for this very step."""
        # "auto" runs a plan without placement with the reorder executor; one with a placement must be valid.
        checked = check_saved_plan(saved, graph,
                                   needs_placement=saved.placement is not None if auto else chosen.needs_placement,
                                   alignment=device_alignment(device.type), unplaced=unplaced,
                                   device_type=device.type, copies_unplaced=copies, expandable_segments=expandable,
                                   memory_budget=memory_budget)
        if memory_budget is not None and not checked.figures["fits_budget"]:
            raise BudgetError(f"the plan given peaks at {human_bytes(checked.figures['peak_bytes'])}, above "
                              f"memory_budget={human_bytes(memory_budget)}; optimize without plan= to make one")
        return checked

    candidates = list(plan) if isinstance(plan, (list, tuple)) else None
    if candidates is not None:
        plan = _first_fitting(candidates, fitted)
    elif plan is not None:
        plan = fitted(plan)
    if plan is None:
        plan = make_plan(graph, device_type=device.type, placement=chosen.needs_placement,
                         time_limit=time_limit, schedule_method=schedule_method, place_method=place_method,
                         unplaced=unplaced, memory_budget=memory_budget,
                         fallback_results=fallback_results if copies else "outside", expandable_segments=expandable,
                         executors=ORDER_EXECUTORS if auto else (chosen_name,))
        if memory_budget is not None and not plan.figures["fits_budget"]:
            f = plan.figures
            limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
            # A budget above the bound that the search ran out of time on may yet be met (a large graph's
            # recomputation search takes tens of seconds): say so, rather than suggest it is impossible.
            more_time = (f"; the search stopped at its time_limit of {limit:g} s, a longer one may find a plan"
                         if memory_budget >= f["lower_bound_bytes"] and f["schedule_seconds"] >= 0.9 * limit else "")
            raise BudgetError(
                f"no plan found keeps the peak under the memory budget of {human_bytes(memory_budget)}: the best peaks "
                f"at {human_bytes(f['peak_bytes'])}, and no plan of this step, with any recomputation, peaks below "
                f"{human_bytes(f['lower_bound_bytes'])}{more_time}"
                + ("" if f.get("no_fit_within_runs") is None else
                   f"; no plan running each op at most {f['no_fit_within_runs']} times fits it either (proven by "
                   "the exact search)"), proven=memory_budget < f["lower_bound_bytes"])
    log.info("planned: peak %d B (eager %d B), arena %s B (%.2f s)", plan.figures.get("peak_bytes", -1),
             plan.figures.get("eager_peak_bytes", -1), plan.figures.get("arena_bytes", "n/a"),
             time.perf_counter() - t0)
    if auto:
        # a saved plan without placement runs in PyTorch's allocator; under a memory
        # budget, in the planned order (the program executor's is eager's, unbudgeted);
        # on the CPU (the live peak) no arena holds less than reorder, a tie included
        choices = auto_choices(device.type, placed=plan.placement is not None, budget=memory_budget is not None)
        pick = least_memory_executor(plan.figures, choices)
        chosen = executor_named(pick)
        worse = above_eager(plan.figures, pick)
        if worse:
            warnings.warn(worse, MemoryWarning, stacklevel=2)
    over = above_budget(plan.figures, pick if auto else chosen_name)
    if over:
        warnings.warn(over, MemoryWarning, stacklevel=2)
    shared = _arena_to_share(chosen, _REPLANNING.get(), device, cuda_graph)
    program = chosen.build(captured, plan, device=device, **shared)
    if not isinstance(program, CompiledProgram):
        error = RuntimeLayerError(f"build() returned a {type(program).__name__}, not a model_runtime CompiledProgram")
        raise invalid_answer(chosen, f"executor {pick if auto else chosen_name!r}", error)
    log.info("compiled for executor %s (%.2f s)", program.executor, time.perf_counter() - t0)

    def replan(example, new_targets, plans):
        token = _REPLANNING.set(step)
        try:
            return optimize(model, example, loss_fn=loss_fn, optimizer=optimizer, executor=executor,
                            time_limit=time_limit, targets=new_targets, train=None if follow_mode else train,
                            schedule_method=schedule_method, place_method=place_method, granularity=granularity,
                            plan=[*(candidates or []), *plans], before_step=before_step,
                            return_outputs=return_outputs, autocast=autocast, max_plans=1, set_grads=set_grads,
                            accumulation_steps=accumulation_steps, scaler=scaler, memory_budget=memory_budget,
                            cuda_graph=cuda_graph, fallback_results=fallback_results)
        finally:
            _REPLANNING.reset(token)

    # Without train=, each call follows the model's train()/eval() mode.
    follow_mode = not train_given
    step = OptimizedStep(model, optimizer if train else None, captured, plan, program, device, replan=replan,
                         follow_mode=follow_mode, max_plans=max_plans, scaler=scaler if train else None,
                         cuda_graph=cuda_graph, functions=(loss_fn, before_step) if train else (),
                         seeded=seeded)
    return step


def _leaf_shapes(call) -> list[tuple]:
    """Shape and dtype of each tensor of a call's ``(args, kwargs, targets)``."""
    return [(tuple(t.shape), t.dtype) for t in pytree.tree_leaves(call) if isinstance(t, torch.Tensor)]


#: the step planning a new variant for a call, while it does (its optimize() warned already)
_REPLANNING: contextvars.ContextVar[OptimizedStep | None] = contextvars.ContextVar("model_runtime_replanning",
                                                                                  default=None)


def _arena_to_share(executor, parent: OptimizedStep | None, device: torch.device, cuda_graph: bool) -> dict:
    """``build``'s ``arena=`` for a new variant of ``parent``: the arena its other plans
    run in (one at a time), when the executor can share one; not under CUDA graphs, whose
    recordings hold the arena's address, which growing it would move."""
    if parent is None or cuda_graph or not getattr(executor, "shares_arena", False):
        return {}
    arena = next((v.program.arena for v in parent.variants if v.program.arena is not None
                  and v.program.arena.device == device), None)
    return {} if arena is None else {"arena": arena}


def _first_fitting(candidates: Sequence, fitted: Callable) -> Plan | None:
    """The first of ``candidates`` that ``fitted`` accepts (checked for this step), or None."""
    for candidate in candidates:
        try:
            return fitted(candidate)
        except (ReoptimizeError, BudgetError):  # made for another step, or above the budget
            continue
    return None


def _warn_parameters_outside(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             gradients: Sequence[str]) -> None:
    """Warn of parameters with a gradient (``gradients``: the captured backward's) that
    the optimizer does not hold: eager's backward leaves it in ``.grad`` (for a second
    optimizer, say); the optimized step keeps none. Parameters the loss does not depend
    on (used under ``no_grad``, as a GAN's generator in the discriminator's step) get
    no gradient in eager either."""
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    with_grad = set(gradients)
    outside = [n for n, p in model.named_parameters() if n in with_grad and id(p) not in held]
    if outside:
        names = ", ".join(outside[:3]) + (", ..." if len(outside) > 3 else "")
        warn_user(f"{len(outside)} parameter(s) get a gradient but are not in the optimizer ({names}): the "
                  "optimized step neither updates them nor sets their .grad, where eager's backward would "
                  "(for a second optimizer, say); freeze them (requires_grad_(False)), put them in the "
                  "optimizer, or pass set_grads=True to get every .grad")


def _check_flags(**flags) -> None:
    """Raise :class:`WrongTypeError` unless each flag is True or False (``train`` may be None):
    a string such as ``"no"`` would be truthy."""
    for name, value in flags.items():
        if not (value is None and name == "train"):
            check_type(value, bool, name, "True or False" + (" or None" if name == "train" else ""))


def _check_max_plans(max_plans) -> None:
    check_type(max_plans, int, "max_plans", "an integer >= 1")
    if max_plans < 1:
        raise RuntimeLayerError(f"max_plans must be at least 1 (the step's first plan counts), got {max_plans}")


#: What ``optimize(plan=...)`` takes, for messages.
PLAN_ARGUMENT = ("a model_ir.Plan, the path of a saved plan (str or os.PathLike), a list or tuple of these "
                 "(e.g. step.plans), or None")


def _check_budget(memory_budget, executor) -> None:
    """Raise unless ``memory_budget`` is None or a number of bytes an executor can keep to."""
    if memory_budget is None:
        return
    check_type(memory_budget, int, "memory_budget", "a number of bytes (an int) or None")
    if memory_budget < 0:
        raise RuntimeLayerError(f"memory_budget must be >= 0 bytes, got {memory_budget}")
    if executor == "program":
        raise RuntimeLayerError("a memory budget with the program executor: it runs eager's order, without the "
                                "recomputations a budget plans; use the executor auto, reorder or arena")


def _check_plan_argument(plan) -> None:
    """Raise :class:`WrongTypeError` unless ``plan`` (or each of a list's items) is a plan or a path."""
    if plan is None:
        return
    items = list(enumerate(plan)) if isinstance(plan, (list, tuple)) else [(None, plan)]
    for i, item in items:
        if not isinstance(item, (Plan, str, os.PathLike)):
            raise WrongTypeError(f"{'plan' if i is None else f'plan[{i}]'}: expected {PLAN_ARGUMENT}, "
                                 f"got {describe(item)}")
