"""``model-opt run MODEL``: optimize a zoo model's step, run it, and compare with eager.

The models come from the ``model_opt_models`` hook (model-bench's zoo, or any
plugin's); without such a plugin the command says so.
"""

from __future__ import annotations

import copy
import json
import statistics
import time

from model_ir.cli_values import AUTOCAST, autocast_name, byte_size, comma_list, seconds, whole_number
from model_ir.errors import ModelOptError
from model_ir.plugins import invalid_answer, provider
from model_runtime.errors import RuntimeLayerError


def run_model(name: str, *, batch_size: int = 8, mode: str = "train", optimizer: str = "sgd",
              executor: str = "auto", steps: int = 5, time_limit: float | None = None, device: str = "cpu",
              compare_eager: bool = False, plan=None, memory_budget: int | None = None,
              cuda_graph: bool = False, autocast: str | None = None):
    """Optimize and run ``steps`` steps of zoo model ``name``; returns ``(step, figures)``.
    ``memory_budget`` (bytes): plan under it, recomputing if needed (see ``optimize``);
    ``cuda_graph``: replay the step as a CUDA graph; ``autocast`` (``bfloat16``, a
    torch dtype's name): mixed precision, for the eager reference too.

    Figures (seconds): ``median_step_seconds`` and, with ``compare_eager``, the eager
    median, the ratio, and whether every loss (train) or output (eval) was bitwise
    equal to eager's.
    """
    if steps < 1:
        raise RuntimeLayerError(f"--steps must be >= 1, got {steps}")
    try:
        autocast = autocast_name(autocast)
    except ValueError as e:
        raise RuntimeLayerError(str(e)) from None
    _check_device(device, "--cuda-graph" if cuda_graph else None)
    try:
        return _run_model(name, batch_size=batch_size, mode=mode, optimizer=optimizer, executor=executor,
                          steps=steps, time_limit=time_limit, device=device, compare_eager=compare_eager, plan=plan,
                          memory_budget=memory_budget, cuda_graph=cuda_graph, autocast=autocast)
    except (RuntimeError, MemoryError) as e:
        from model_ir.torch.errors import out_of_memory

        if isinstance(e, ModelOptError) or not out_of_memory(e):
            raise
        raise RuntimeLayerError(f"batch size {batch_size} does not fit in {device} memory: {name}'s step ran out "
                                "of memory (try a smaller --batch-size)") from None


def _run_model(name, *, batch_size, mode, optimizer, executor, steps, time_limit, device, compare_eager, plan,
               memory_budget, cuda_graph, autocast):
    # Imported here so that loading the plugin (every `model-opt` call) does not import torch.
    import contextlib

    import torch

    from model_runtime.optimized_step import optimize

    factory = provider("model_opt_models", name, "model")
    case = factory.build(mode, batch_size, optimizer=optimizer, device=device)
    if not all(hasattr(case, a) for a in ("model", "inputs", "target", "loss_fn", "optimizer")):
        error = RuntimeLayerError(f"build() returned a {type(case).__name__}, not a case with model, inputs, target, "
                                  "loss_fn and optimizer (model_bench.zoo.ModelCase)")
        raise invalid_answer(factory, f"model {name!r}", error)
    train = mode == "train"
    dtype = getattr(torch, autocast) if autocast else None
    targets = (case.target,) if train and case.target is not None else ()
    ref = ref_opt = None
    if compare_eager:
        # One deepcopy of both: the copied optimizer then holds the copied parameters.
        ref, ref_opt = copy.deepcopy((case.model, case.optimizer if train else None))
    step = optimize(case.model, case.inputs, loss_fn=case.loss_fn if train else None,
                    optimizer=case.optimizer if train else None, executor=executor, time_limit=time_limit,
                    targets=targets, train=train, plan=plan, memory_budget=memory_budget, cuda_graph=cuda_graph,
                    autocast=dtype)
    sync = torch.cuda.synchronize if step.device.type == "cuda" else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    ours, theirs, same = [], [], True
    for i in range(steps):
        torch.manual_seed(i)
        out, seconds = timed(lambda: step(*case.inputs, targets=targets))
        ours.append(seconds)
        if ref is not None:
            torch.manual_seed(i)
            if train:
                from model_ir.testing.torch_models import eager_step

                expected, seconds = timed(lambda: eager_step(ref, ref_opt, case.inputs, case.loss_fn, targets,
                                                             autocast=dtype))
            else:
                with torch.no_grad(), (torch.autocast(step.device.type, dtype=dtype) if dtype
                                       else contextlib.nullcontext()):
                    expected, seconds = timed(lambda: ref(*case.inputs))
            theirs.append(seconds)
            got = out if isinstance(out, tuple) else (out,)
            want = [t for t in (expected if isinstance(expected, (tuple, list)) else (expected,))
                    if isinstance(t, torch.Tensor)]
            same = same and len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    figures = dict(step.figures())
    # The first step pays one-off costs (allocator warm-up, kernel selection).
    figures["median_step_seconds"] = statistics.median(ours[1:] or ours)
    if theirs:
        figures["eager_median_step_seconds"] = statistics.median(theirs[1:] or theirs)
        figures["step_time_ratio"] = figures["median_step_seconds"] / figures["eager_median_step_seconds"]
        figures["bitwise_equal_to_eager"] = same
    return step, figures


def _check_device(device: str, cuda_graph: str | None = None) -> None:
    """Raise :class:`RuntimeLayerError` unless ``device`` names a device of this machine,
    and, when the option ``cuda_graph`` asks for CUDA graphs, a CUDA one (refused
    before anything is planned, not after)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise RuntimeLayerError(f"--device {device!r} is not a device name (e.g. cpu, cuda, cuda:1)") from None
    if dev.type not in ("cpu", "cuda"):
        raise RuntimeLayerError(f"--device {device}: the runtime runs steps on cpu or cuda")
    if cuda_graph and dev.type != "cuda":
        raise RuntimeLayerError(f"{cuda_graph}: CUDA graphs need --device cuda (this run is on {dev.type})")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeLayerError(f"--device {device}: no CUDA device on this machine; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise RuntimeLayerError(f"--device {device}: this machine has {count} CUDA device(s)")


class RunCommand:
    name = "run"
    help = "optimize a zoo model's training step, run it with an executor, compare with eager"

    def add_arguments(self, parser) -> None:
        parser.add_argument("model", nargs="?", help="model name from the zoo (model-opt bench --list; needs "
                                                     "model-bench); or --model NAME, as bench and capture take it")
        parser.add_argument("--model", dest="model_option", metavar="NAME", help="the zoo model (same as MODEL)")
        parser.add_argument("--batch-size", type=whole_number(1), default=8, metavar="B",
                            help="batch size (default 8)")
        parser.add_argument("--mode", choices=("train", "eval"), default="train",
                            help="train (default: forward, loss, backward, update) or eval (forward only)")
        parser.add_argument("--optimizer", default=None,
                            help="optimizer name understood by the zoo (default sgd; train only)")
        parser.add_argument("--executor", default="auto",
                            help="auto (default: arena, reorder or program, whichever the plan says holds "
                                 "least), arena, reorder, program, or a plugin's")
        parser.add_argument("--steps", type=whole_number(1), default=5, help="steps to run (default 5)")
        parser.add_argument("--time-limit", type=seconds(allow_zero=True), default=None,
                            help="seconds per solver (default 10)")
        parser.add_argument("--device", default="cpu", help="device to run on: cpu (default) or cuda")
        parser.add_argument("--compare-eager", action="store_true",
                            help="also run eager steps on a copy: step time ratio and bitwise comparison")
        parser.add_argument("--budget", type=byte_size(1), default=None, metavar="SIZE",
                            help="memory budget of the plan's peak (e.g. 2GiB): recompute activations when no "
                                 "order alone fits (also with --measure)")
        parser.add_argument("--plan", default=None, help="reuse a plan JSON saved with --save-plan")
        parser.add_argument("--save-plan", default=None, help="write the plan JSON here")
        parser.add_argument("--force", action="store_true", help="replace the --save-plan file if it exists")
        parser.add_argument("--autocast", default=None, choices=tuple(AUTOCAST),
                            help="mixed precision: the forward pass and the loss under torch.autocast with this "
                                 "dtype (the AMP recipe), for eager too")
        parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
        parser.add_argument("--measure", action="store_true",
                            help="run eager, reorder and arena each in a fresh process, with PyTorch's default "
                                 "allocator and with expandable segments, and report measured memory (CUDA: "
                                 "max_memory_allocated/reserved) and step times next to the plan; a failed "
                                 "variant is reported and the others go on; exit status 1 when every variant "
                                 "failed")
        parser.add_argument("--allocators", default=None,
                            help="with --measure: allocator settings to run (default,expandable)")
        parser.add_argument("--variants", default=None,
                            help="with --measure: eager and executor names to run (default eager,reorder,arena; "
                                 "auto: the one the plan says holds less); EXECUTOR+graph replays that executor's "
                                 "step as a CUDA graph")
        parser.add_argument("--cuda-graph", action="store_true",
                            help="replay the step as a CUDA graph after its first call (CUDA)")

    def run(self, args) -> int:
        from model_ir import save_plan
        from model_ir.output_files import check_output

        if args.model and args.model_option and args.model != args.model_option:
            raise RuntimeLayerError(f"two models named: {args.model!r} and --model {args.model_option!r}")
        args.model = args.model or args.model_option
        if not args.model:
            raise RuntimeLayerError("name a zoo model: model-opt run MODEL (or --model MODEL); "
                                    "model-opt bench --list lists them")
        if args.optimizer is not None and args.mode == "eval":
            raise RuntimeLayerError(f"--optimizer {args.optimizer}: an eval step runs no optimizer (forward pass "
                                    "only); drop --optimizer, or use --mode train")
        args.optimizer = "sgd" if args.optimizer is None else args.optimizer
        given = [flag for flag, value in (("--allocators", args.allocators), ("--variants", args.variants))
                 if value is not None]
        if given and not args.measure:
            raise RuntimeLayerError(f"{given[0]} names what --measure runs; add --measure (or drop {given[0]})")
        if args.plan is not None and args.budget is not None:
            raise RuntimeLayerError("--budget plans the step under a memory budget; --plan reuses a saved plan "
                                    "as it is: give one of them")
        if args.measure:
            if args.plan is not None or args.save_plan is not None:
                raise RuntimeLayerError("--plan and --save-plan with --measure: each measured variant plans in "
                                        "its own process; run without --measure to save or reuse a plan")
            if args.cuda_graph:
                raise RuntimeLayerError("--cuda-graph with --measure: name the variants instead, e.g. "
                                        "--variants eager,arena,arena+graph")
            if args.executor != "auto":
                raise RuntimeLayerError(f"--executor {args.executor} with --measure: name the variants instead, "
                                        f"e.g. --variants eager,{args.executor}")
            if args.compare_eager:
                raise RuntimeLayerError("--compare-eager with --measure: the eager variant is the comparison "
                                        "(--variants eager,...)")
            return _run_measure(args)

        if args.save_plan is not None:  # checked before running the model
            check_output(args.save_plan, force=args.force, inputs=[args.plan] if args.plan else [],
                         flag="--save-plan")
        step, figures = run_model(
            args.model, batch_size=args.batch_size, mode=args.mode, optimizer=args.optimizer,
            executor=args.executor, steps=args.steps, time_limit=args.time_limit, device=args.device,
            compare_eager=args.compare_eager, plan=args.plan, memory_budget=args.budget,
            cuda_graph=args.cuda_graph, autocast=AUTOCAST.get(args.autocast),
        )
        if args.save_plan is not None:
            save_plan(step.plan, args.save_plan, overwrite=args.force)
        if args.json:
            print(json.dumps(figures, default=str))
            return 0
        print(step.report())
        line = f"  median step time: {1e3 * figures['median_step_seconds']:.2f} ms"
        if "eager_median_step_seconds" in figures:
            line += (f" (eager {1e3 * figures['eager_median_step_seconds']:.2f} ms, "
                     f"x{figures['step_time_ratio']:.3f}); bitwise equal to eager: "
                     f"{'yes' if figures['bitwise_equal_to_eager'] else 'NO'}")
        print(line)
        return 0


def _run_measure(args) -> int:
    """``model-opt run MODEL --measure``: every variant in a fresh process (see
    :mod:`model_runtime.measured_runs`); a crashed variant is reported, not fatal, but
    the status is 1 when no variant succeeded."""
    import sys

    from model_runtime.measured_runs import ALLOC_CONFS, executor_of, measure_model, render_measurement
    from model_runtime.executors import AUTO_EXECUTOR, executor_named

    if args.steps < 1:
        raise RuntimeLayerError(f"--steps must be >= 1, got {args.steps}")
    # each measured once: a setting or variant named twice would be one entry of the results
    allocs = tuple(comma_list(args.allocators, "--allocators", distinct=True) or ALLOC_CONFS)
    unknown = [a for a in allocs if a not in ALLOC_CONFS]
    if unknown:
        raise RuntimeLayerError(f"--allocators: unknown setting {unknown[0]!r}; choose from {', '.join(ALLOC_CONFS)}")
    variants = tuple(comma_list(args.variants, "--variants", distinct=True) or ("eager", "reorder", "arena"))
    for v in variants:
        if v != "eager" and executor_of(v)[0] != AUTO_EXECUTOR:
            executor_named(executor_of(v)[0])  # a clear error for an unknown one
    provider("model_opt_models", args.model, "model")
    graphed = [v for v in variants if executor_of(v)[1]]
    _check_device(args.device, f"--variants {graphed[0]}" if graphed else None)
    result = measure_model(args.model, mode=args.mode, batch_size=args.batch_size, optimizer=args.optimizer,
                           device=args.device, variants=variants, allocs=allocs, steps=args.steps,
                           time_limit=args.time_limit, memory_budget=args.budget,
                           autocast=AUTOCAST.get(args.autocast),
                           progress=None if args.json else (lambda m: print(f"  running {m}", file=sys.stderr)))
    print(json.dumps(result) if args.json else render_measurement(result))
    if all("error" in r for by_variant in result["runs"].values() for r in by_variant.values()):
        print("model-opt: run: every variant failed", file=sys.stderr)
        return 1
    return 0
