"""``model-opt bench``: benchmark zoo models (or a graph file), ``bench max-batch`` and ``bench suite``."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from model_bench.errors import BenchError
from model_ir.cli import SubcommandsAction
from model_ir.cli_frontend import add_frontend_argument
from model_ir.cli_values import AUTOCAST, budget_status, comma_list, seconds, whole_number
from model_ir.errors import FormatError
from model_ir.output_files import check_writable
from model_bench.optimizers import OPTIMIZERS, optimizer_for_mode
from model_bench.pipeline import DEVICES, BenchSettings
from model_bench.progress import Progress
from model_bench.reports import fmt_bytes, fmt_percent, to_json
from model_bench.sweep import SUITE_BATCH_SIZES, SUITE_MODES

DEFAULT_OUT = "bench-out"
DEFAULT_OPTIMIZER = "sgd"
DEFAULT_DEVICE = "cuda"


def _batch_sizes(values: list[str] | None) -> list[int]:
    out = []
    for v in comma_list(values, "--batch-sizes") or ():
        # ASCII digits only (README, as run's and capture's --batch-size): int() alone also
        # reads "1_0" as 10 and the digits of other scripts
        if not re.fullmatch(r"[+-]?[0-9]{1,40}", v, re.ASCII):
            raise BenchError(f"--batch-sizes: batch size must be a positive integer, got {v!r}")
        if int(v) in out:  # each run once: a repeat wrote the same run twice into the results
            raise BenchError(f"--batch-sizes: {int(v)} is named twice")
        out.append(int(v))
    return out


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every bench command: optimizer and the algorithms to run."""
    # Defaults None (sgd, cuda: see settings_from) so that bench --graph can tell a flag given.
    parser.add_argument("--optimizer", default=None, help=f"training optimizer: {', '.join(OPTIMIZERS)} "
                        "(default sgd: SGD(lr=0.1), MODeL's setup)")
    parser.add_argument("--scheduler", default="auto", help="scheduling method (model_sched; default auto)")
    parser.add_argument("--placer", default="auto", help="placement method (model_place; default auto)")
    parser.add_argument("--solver", default=None, help="MILP/CP solver backend for exact methods (default: the "
                        "scheduler's choice)")
    parser.add_argument("--time-limit", type=seconds(allow_zero=False), default=None, metavar="SECONDS",
                        help="time limit of each solve; the best answer found and its gap are reported")
    parser.add_argument("--device", default=None, choices=DEVICES,
                        help="capture the step with this device's kernels (default cuda: the attention, batch-norm "
                             "and dropout kernels CUDA runs, emulated without a GPU, plus cuBLAS and cuDNN workspaces)")
    parser.add_argument("--autocast", default=None, choices=tuple(AUTOCAST),
                        help="mixed precision: the forward pass and the loss under torch.autocast with this dtype "
                             "(the AMP recipe; CUDA's autocast policy, emulated without a GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def settings_from(args) -> BenchSettings:
    """The checked settings of the command line (unknown names fail before any capture)."""
    from model_bench.pipeline import check_settings

    budget = getattr(args, "budget", None)
    if budget is not None:
        from model_bench.max_batch import parse_bytes

        budget = parse_bytes(budget, "--budget")
    return check_settings(BenchSettings(scheduler=args.scheduler, placer=args.placer, solver=args.solver,
                                        time_limit=args.time_limit, optimizer=args.optimizer or DEFAULT_OPTIMIZER,
                                        device=args.device or DEFAULT_DEVICE, memory_budget=budget,
                                        autocast=args.autocast))


def format_run(f: dict[str, Any]) -> str:
    """The human-readable report of one run (bytes shown in GiB or MiB, exact in the JSON)."""
    if f.get("error"):
        return f"{f.get('model')} {f.get('mode')} batch {f.get('batch_size')}: failed: {f['error']}"
    head = f"{f.get('model', 'graph')} {f.get('mode', '')} batch {f.get('batch_size', '?')}"
    if f.get("optimizer"):
        head += f" ({f['optimizer']})"
    if f.get("autocast"):
        head += f" under {f['autocast']} autocast"
    if f.get("device"):
        head += f" for {f['device']}" + (" (kernels emulated)" if f.get("kernels") == "emulated" else "")
    params = f" {f['parameters']:,} parameters," if f.get("parameters") is not None else ""
    opt = "optimal" if f["schedule_optimal"] else f"gap {fmt_percent(f['schedule_gap'], 2)}"
    popt = "optimal" if f["placement_optimal"] else f"gap {fmt_percent(f['placement_gap'], 2)}"
    secs = ", ".join(f"{k} {v:.2f}" for k, v in f["stage_seconds"].items())
    if f.get("device") == "cpu":  # the CPU: PyTorch's allocator holds the live bytes
        fused = [] if f.get("mode") == "eval" else [
            f"  optimizer in backward   peak {fmt_bytes(f['optimizer_in_backward_peak_bytes'])}"]
        eager = [f"  eager (program order)   peak {fmt_bytes(f['eager_peak_bytes'])}: what PyTorch's CPU allocator "
                 "holds (it frees each tensor when it dies; no caching allocator)"
                 + ("" if f.get("cpu_threads_measured") else
                    "; kernels' temporaries by rules only (a model on meta runs no kernel: oneDNN's convolution "
                    "buffers are left out; optimize() on the real model measures them)")]
        reorder = [f"  reorder executor        peak {fmt_bytes(f['reorder_reserved_bytes'])} (the optimized order "
                   "with PyTorch's allocator, no arena)"]
        plan = (f"{fmt_percent(-f['saving_vs_reserved'])} vs eager peak, {fmt_percent(-f['saving_vs_strongest'])} "
                f"vs the strongest baseline")
    else:
        fused = [] if f.get("mode") == "eval" else [  # an eval step has no optimizer to fuse
            f"  optimizer in backward   peak {fmt_bytes(f['optimizer_in_backward_peak_bytes'])}; reserved "
            f"{fmt_bytes(f['optimizer_in_backward_reserved_bytes'])}, "
            f"{fmt_bytes(f['optimizer_in_backward_reserved_expandable_bytes'])} with expandable segments"]
        eager = [f"  eager (program order)   peak {fmt_bytes(f['eager_peak_bytes'])}; reserved by the caching "
                 f"allocator {fmt_bytes(f['eager_reserved_bytes'])} ({f['eager_segments']} segments), "
                 f"{fmt_bytes(f['eager_reserved_expandable_bytes'])} with expandable segments"]
        reorder = [f"  reorder executor        reserved {fmt_bytes(f['reorder_reserved_bytes'])}, "
                   f"{fmt_bytes(f['reorder_reserved_expandable_bytes'])} with expandable segments (the optimized "
                   "order with PyTorch's allocator, no arena)"]
        plan = (f"{fmt_percent(-f['saving_vs_reserved'])} vs eager reserved, "
                f"{fmt_percent(-f['saving_vs_expandable'])} vs expandable segments, "
                f"{fmt_percent(-f['saving_vs_strongest'])} vs the strongest baseline")
    return "\n".join([
        f"{head}: {f['ops']} ops, {f['buffers']} buffers,{params} persistent {fmt_bytes(f['persistent_bytes'])}",
        *eager,
        *fused,
        f"  optimized order         peak {fmt_bytes(f['optimized_peak_bytes'])} "
        f"({fmt_percent(-f['peak_saving'])} vs eager peak) [{f['schedule_method']}"
        f"{': ' + f['schedule_source'] if f.get('schedule_source') else ''}]; "
        f"lower bound {fmt_bytes(f['lower_bound_bytes'])}, {opt}",
        f"  placement               arena {fmt_bytes(f['arena_bytes'])} for a transient peak of "
        f"{fmt_bytes(f['optimized_transient_peak_bytes'])}: fragmentation {fmt_percent(f['fragmentation'], 2)} "
        f"[{f['placement_method']}], {popt}",
        *reorder,
        f"  plan memory             {fmt_bytes(f['optimized_total_bytes'])} (persistent + arena"
        f"{' + cuBLAS workspace ' + fmt_bytes(f['workspace_bytes']) if f.get('workspace_bytes') else ''}): "
        f"{plan} ({f['strongest_baseline']}); best possible {fmt_percent(-f['best_possible_saving_vs_strongest'])} "
        "(lower bound)",
        *_runtime_lines(f),
        *_budget_lines(f),
        *_measured_lines(f),
        f"  seconds                 {secs}",
    ])


def _runtime_lines(f: dict[str, Any]) -> list[str]:
    """What model-runtime's ``optimize()`` would hold (simulated), when the capture says
    which buffers its arena executor leaves to PyTorch's allocator."""
    if "runtime_total_bytes" not in f:
        return []

    def order(suffix: str) -> str:
        source = f.get(f"runtime_order{suffix}", "scheduler")
        return "" if source == "scheduler" else f", {source} order"

    expandable = "" if f.get("device") == "cpu" else (  # the CPU has no expandable segments
        f", {fmt_bytes(f['runtime_total_expandable_bytes'])} with expandable segments "
        f"({f['runtime_executor_expandable']}{order('_expandable')})")
    return [f"  optimize() (simulated)  {fmt_bytes(f['runtime_total_bytes'])} with the {f['runtime_executor']} "
            f"executor{order('')}{expandable}: "
            f"{fmt_percent(-f['runtime_saving_vs_strongest'])} vs the strongest "
            "baseline (persistent + what the executor holds, fallbacks and workspaces included)"]


def _budget_lines(f: dict[str, Any]) -> list[str]:
    """What a ``--budget`` run's recomputation costs (simulated peak, FLOPs of the capture)."""
    if f.get("memory_budget") is None:
        return []
    fits = "fits" if f["fits_budget"] else "does NOT fit (the lowest peak found is reported)"
    if f["memory_budget"] < f["lower_bound_bytes"]:
        fits += ": the budget is below the lower bound, no plan fits it with any recomputation"
    cost = (f"recomputes {f['recomputed_ops']} ops, {f['recompute_flops']:.3g} FLOPs"
            + (f" ({fmt_percent(f['recompute_overhead'])} of the step, {f['recompute_forward_ratio']:.2f}x "
               "its forward pass)" if f.get("recompute_overhead") is not None else "")
            + ("" if f.get("recompute_flops_lower_bound") is None or not f["recompute_flops"]
               else f", no plan fitting it fewer than {f['recompute_flops_lower_bound']:.3g}"))
    return [f"  memory budget           {fmt_bytes(f['memory_budget'])}: the plan {fits}; {cost}; no order "
            f"without recomputation peaks below {fmt_bytes(f['reorder_lower_bound_bytes'])}"
            + ("" if f.get("no_fit_within_runs") is None else
               f"; no plan running each op at most {f['no_fit_within_runs']} times fits it (proven)")]


def _measured_lines(f: dict[str, Any]) -> list[str]:
    """The measured figures of a ``--measure`` run (max allocated / reserved per variant and allocator)."""
    if not f.get("measured_torch"):
        return []
    lines = [f"  measured                on {f.get('measured_gpu', '?')}, torch {f['measured_torch']}: "
             "max allocated / reserved (default allocator; expandable segments), the simulated reserved "
             "in parentheses"]
    simulated = {"eager": "eager_reserved{}_bytes", "reorder": "reorder_reserved{}_bytes"}
    for variant in ("eager", "reorder", "arena"):
        cells = []
        for suffix in ("", "_expandable"):
            error = f.get(f"measured_{variant}_error{suffix}")
            sim = f.get(simulated.get(variant, "").format(suffix))
            cells.append(f"failed: {error}" if error else
                         f"{fmt_bytes(f.get(f'measured_{variant}_allocated{suffix}_bytes'))} / "
                         f"{fmt_bytes(f.get(f'measured_{variant}_reserved{suffix}_bytes'))}"
                         + (f" ({fmt_bytes(sim)})" if sim is not None else ""))
        lines.append(f"    {variant:<21}{cells[0]}; {cells[1]}")
    return lines


class BenchCommand:
    name = "bench"
    help = "benchmark zoo models: eager vs optimized order and placement, with bounds, reports and plots"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.description = (self.help + "\n\nexamples:\n"
                              "  model-opt bench --model alexnet --mode train --batch-size 32\n"
                              "  model-opt bench --models resnet18,vgg11 --modes train,eval --batch-sizes 1,32\n"
                              "  model-opt bench max-batch --model resnet50 --memory 16GiB\n"
                              "  model-opt bench suite --out results/")
        src = parser.add_mutually_exclusive_group()
        src.add_argument("--model", action="append", dest="models", metavar="NAME", help="zoo model (see --list)")
        src.add_argument("--models", action="append", metavar="A,B,...", help="zoo models to sweep")
        src.add_argument("--graph", metavar="FILE", help="benchmark a captured graph (model-ir/1 JSON, or any "
                                                         "file a frontend reads) instead")
        add_frontend_argument(parser, "the --graph file")
        parser.add_argument("--mode", "--modes", action="append", dest="modes", metavar="MODE",
                            help="train (default) or eval; a list sweeps")
        parser.add_argument("--batch-size", "--batch-sizes", action="append", dest="batch_sizes", metavar="B",
                            help="batch size (default 1); a list sweeps")
        add_optimizer_arguments(parser)
        parser.add_argument("--budget", metavar="SIZE",
                            help="memory budget of the plan's peak (e.g. 2GiB): recompute ops when no order alone "
                                 "fits it, at the fewest recomputed FLOPs found")
        parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                            help=f"output directory (default {DEFAULT_OUT}/)")
        parser.add_argument("--no-artifacts", action="store_true",
                            help="write only the reports, not each run's graph, plan, plots and snapshots")
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        parser.add_argument("--measure", action="store_true",
                            help="also run eager, reorder and arena steps on the CUDA GPU (each in a fresh process, "
                                 "default allocator and expandable segments) and report measured memory")
        parser.add_argument("--list", action="store_true", help="list the zoo's models and exit")
        sub = parser.add_subparsers(dest="bench_command", metavar="{max-batch,suite}", action=SubcommandsAction)
        mb = sub.add_parser("max-batch", help="largest batch size within a memory budget, eager vs optimized")
        mb.add_argument("--model", required=True, metavar="NAME", help="zoo model (see bench --list)")
        mb.add_argument("--mode", default="train", metavar="MODE", help="train (default) or eval")
        mb.add_argument("--memory", required=True, metavar="SIZE", help="budget, e.g. 16GiB, 500MiB, 16GB")
        mb.add_argument("--limit", type=whole_number(1), default=4096, metavar="B", help="largest batch size tried (default 4096)")
        mb.add_argument("--measure", choices=("auto", "always", "never"), default="auto",
                        help="measure real steps (eager, and the plan through model_runtime) on a CUDA GPU "
                             "instead of simulating (auto: when one is available)")
        mb.add_argument("--recompute", action="store_true",
                        help="also the largest batch a plan with recomputation fits (simulated), with its cost")
        mb.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        add_optimizer_arguments(mb)
        su = sub.add_parser("suite", help="the benchmark suite: every zoo model, train and eval, batch 1 and 32")
        su.add_argument("--models", action="append", metavar="A,B,...", help="default: every suite model")
        su.add_argument("--modes", action="append", metavar="MODES", help="default: train,eval")
        su.add_argument("--batch-sizes", action="append", metavar="B,...", help="default: 1,32")
        su.add_argument("--out", default=f"{DEFAULT_OUT}/suite", metavar="DIR",
                        help=f"output directory (default {DEFAULT_OUT}/suite/)")
        su.add_argument("--budget", metavar="SIZE", help="memory budget of each plan's peak (see bench --budget)")
        su.add_argument("--artifacts", action="store_true", help="also write each run's graph, plan, plots, snapshots")
        su.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        su.add_argument("--measure", action="store_true", help="also measure every run on the CUDA GPU (see bench)")
        add_optimizer_arguments(su)

    def run(self, args) -> int:
        if args.bench_command == "max-batch":
            return run_max_batch(args)
        if args.bench_command == "suite":
            return run_suite(args)
        if args.list:
            if args.models or args.graph:  # it ran nothing and said nothing of them
                raise BenchError("--list lists every zoo model and runs none; drop --model/--graph or --list")
            return list_models(args.json)
        if args.frontend and not args.graph:
            raise BenchError("--frontend says how to read a --graph FILE; name one")
        if args.graph:
            if args.measure:
                raise BenchError("--measure runs zoo models; a graph file has no model to run")
            return run_graph_file(args)
        models = comma_list(args.models, "--models", distinct=True) or []
        if not models:
            raise BenchError("name a model with --model NAME (see model-opt bench --list) or a graph with --graph")
        modes = comma_list(args.modes, "--modes", distinct=True) or ["train"]
        batch_sizes = _batch_sizes(args.batch_sizes) or [1]
        return run_models(args, models, modes, batch_sizes, artifacts=not args.no_artifacts)


def check_out_dir(path: str, flag: str = "--out") -> None:
    """Raise :class:`BenchError` unless ``path`` can be the reports' folder: not empty,
    and neither it nor a folder above it an existing file (checked before any run)."""
    if not path:
        raise BenchError(f"{flag}: the path is empty; name an output directory")
    p = Path(path)
    for above in (p, *p.parents):
        if not os.path.exists(above):
            continue
        if not os.path.isdir(above):
            where = "" if above == p else f"{above} "
            raise BenchError(f"{flag} {path}: {where}is not a directory; name an output directory")
        try:  # the reports' folder, or the one it is made in: writable before the first run
            check_writable(str(above), f"{flag} {path}")
        except FormatError as e:
            raise BenchError(str(e)) from None
        return


def list_models(as_json: bool) -> int:
    from model_bench.zoo import model_providers

    found = model_providers()
    if as_json:
        print(json.dumps({n: {"description": getattr(p, "description", ""), "suite": getattr(p, "suite", True)}
                          for n, p in sorted(found.items())}))
        return 0
    width = max(map(len, found), default=0)
    for n, p in sorted(found.items()):
        tag = "" if getattr(p, "suite", True) else "  (not in the default suite)"
        print(f"{n:<{width}}  {getattr(p, 'description', '')}{tag}")
    return 0


def run_models(args, models: list[str], modes: list[str], batch_sizes: list[int], *, artifacts: bool,
               title: str = "model-opt bench") -> int:
    from model_bench.sweep import run_sweep

    from model_bench.sweep import check_sweep

    check_out_dir(args.out)
    settings = settings_from(args)
    check_sweep(models, modes, batch_sizes)
    _check_optimizer_mode(args.optimizer, modes)
    if args.measure:
        check_cuda("--measure")
    progress = Progress(quiet=args.quiet)

    def show(figures, run):
        if not args.json:
            print(format_run(figures), flush=True)

    results = run_sweep(models, modes, batch_sizes, settings, out_dir=args.out, artifacts=artifacts,
                        progress=progress, on_run=show, title=title, measure=args.measure)
    out = Path(args.out)
    if args.json:
        print(to_json(results[0] if len(results) == 1 else {"results": results, "out": str(out)}))
    else:
        print(f"reports written to {out}/ (results.json, results.csv, summary.md, results_table.md)")
    if len(results) == 1 and not results[0].get("error") and results[0].get("memory_budget") is not None:
        # one run exits as schedule and place do: 1 when proven to miss its budget, 3 when not proven
        one = results[0]
        return budget_status(one["memory_budget"], one["fits_budget"], one["lower_bound_bytes"])
    return 1 if any(r.get("error") or r.get("fits_budget") is False for r in results) else 0


def check_cuda(flag: str) -> None:
    """Raise a one-line error unless torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        raise BenchError(f"{flag} needs torch with CUDA, and torch is not installed") from None
    if not torch.cuda.is_available():
        raise BenchError(f"{flag} runs the steps on a CUDA GPU, and none is available")


def run_suite(args) -> int:
    from model_bench.sweep import suite_models

    models = comma_list(args.models, "--models", distinct=True) or suite_models()
    modes = comma_list(args.modes, "--modes", distinct=True) or list(SUITE_MODES)
    batch_sizes = _batch_sizes(args.batch_sizes) or list(SUITE_BATCH_SIZES)
    return run_models(args, models, modes, batch_sizes, artifacts=args.artifacts, title="model-opt bench suite")


def run_graph_file(args) -> int:
    from model_bench.artifacts import ARTIFACTS, run_label, write_artifacts
    from model_bench.pipeline import analyze_graph
    from model_bench.reports import REPORTS, write_reports
    from model_ir.frontends import load_file

    if args.modes or args.batch_sizes:
        raise BenchError("--mode and --batch-size describe zoo models; a graph file was captured with its own")
    if args.optimizer is not None or args.device is not None or args.autocast is not None:
        raise BenchError("--optimizer, --device and --autocast say how to capture zoo models; a graph file was "
                         "captured with its own")
    check_out_dir(args.out)
    progress = Progress(quiet=args.quiet, prefix=f"[{Path(args.graph).name}] ")
    seconds: dict[str, float] = {}
    with progress.stage("load", seconds):
        graph = load_file(args.graph, args.frontend)
    extra = {"model": graph.meta.get("model") or graph.name,
             # a graph captured for eval without a bench mode is reported as eval
             "mode": graph.meta.get("mode") or ("eval" if graph.meta.get("train") is False else "graph"),
             "batch_size": graph.meta.get("batch_size") or 0,
             "optimizer": graph.meta.get("optimizer"),
             **({"autocast": graph.meta["autocast"]} if graph.meta.get("autocast") else {})}
    # The files this run writes are known before the analysis (the run's folder is named by
    # ``extra``): an --out that would overwrite the input is refused before any work.
    out = Path(args.out)
    run_dir = out / run_label(extra)
    written = [out / name for name in REPORTS.values()]
    written += [] if args.no_artifacts else [run_dir / name for name in ARTIFACTS.values()]
    if any(path.resolve() == Path(args.graph).resolve() for path in written):
        raise BenchError(f"--out {out} would overwrite the input graph {args.graph}; choose another directory")
    run = analyze_graph(graph, settings_from(args), progress=progress, seconds=seconds, extra=extra)
    figures = dict(run.figures)
    if not args.no_artifacts:
        write_artifacts(run, run_dir)
    write_reports([figures], out)
    print(to_json(figures) if args.json else format_run(figures))
    if figures.get("memory_budget") is None:
        return 0
    return budget_status(figures["memory_budget"], figures["fits_budget"], figures["lower_bound_bytes"])


def _check_optimizer_mode(optimizer: str | None, modes: list[str]) -> None:
    """As capture and run: an optimizer named for eval steps only would be silently ignored."""
    if set(modes) == {"eval"}:
        optimizer_for_mode(optimizer, "eval")


def run_max_batch(args) -> int:
    import importlib.util

    from model_bench.max_batch import max_batch, parse_bytes

    budget = parse_bytes(args.memory)
    settings = settings_from(args)
    _check_optimizer_mode(args.optimizer, [args.mode])
    measure = args.measure == "always"
    if args.measure == "auto" and importlib.util.find_spec("torch") is not None:
        import torch

        measure = torch.cuda.is_available()
    if measure:
        check_cuda("--measure always")
    progress = Progress(quiet=args.quiet, prefix=f"[{args.model} max-batch] ")
    result = max_batch(args.model, budget, mode=args.mode, settings=settings, limit=args.limit,
                       measure=measure, progress=progress, recompute=args.recompute)
    if args.json:
        print(to_json(result))
        return 0
    amp = f" under {result['autocast']} autocast" if result.get("autocast") else ""
    print(f"{args.model} {args.mode}{amp} within {fmt_bytes(budget)} (batch sizes up to {args.limit}):")
    print(f"  eager, {result['eager_source']}: largest batch {result['eager_max_batch_size']}")
    print(f"  strongest eager baseline, {result['strongest_baseline_source']}: largest batch "
          f"{result['strongest_baseline_max_batch_size']}")
    print(f"  optimized, {result['optimized_source']}: largest batch {result['optimized_max_batch_size']}"
          + (f" ({', '.join(gains)})" if (gains := [f"{result[k]:.2f}x {name}" for k, name in (
              ("gain", "eager"), ("gain_vs_strongest", "the strongest baseline")) if result[k]]) else ""))
    if result.get("plan_max_batch_size") is not None:
        print(f"  optimized plan, {result['plan_source']}: largest batch {result['plan_max_batch_size']}")
    if args.recompute:
        b = result["recompute_max_batch_size"]
        cost = result.get("recompute_overhead")
        print(f"  plan with recomputation, {result['recompute_source']}: largest batch {b}"
              + (f" (recomputing {fmt_percent(cost)} of the step's FLOPs)" if b and cost is not None else ""))
    return 0
