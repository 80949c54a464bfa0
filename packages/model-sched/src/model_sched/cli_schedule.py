"""``model-opt schedule GRAPH``: the order with the smallest peak, with its bound."""

from __future__ import annotations

import json
import os
import sys

from model_ir.cli_frontend import add_frontend_argument
from model_ir.cli_values import budget_status, byte_size, seconds
from model_ir.errors import FormatError
from model_ir.formatting import human_bytes, share_of
from model_ir.frontends import load_file
from model_ir.json_format import save_plan
from model_ir.output_files import check_output
from model_ir.plan import Plan, Schedule
from model_ir.plugins import providers
from model_sched.api import schedule, scheduler_names
from model_sched.control import Progress
from model_sched.result import ScheduleResult


def plan_of(graph, result: ScheduleResult) -> Plan:
    """A ``model_ir.Plan`` holding the order and its figures (no placement yet)."""
    figures = {k: v for k, v in result.to_dict().items() if k != "order"}
    figures["schedule_seconds"] = figures.pop("seconds")
    return Plan(graph, Schedule(result.order), None, figures)


def _print_progress(event: Progress) -> None:
    print(f"[{event.seconds:7.2f} s] {event.stage}: best {human_bytes(event.best_peak_bytes)}, "
          f"bound {human_bytes(event.lower_bound_bytes)}", file=sys.stderr, flush=True)


class ScheduleCommand:
    name = "schedule"
    help = "find the operator order with the smallest peak memory of a graph file"

    def add_arguments(self, parser) -> None:
        parser.add_argument("graph", help="graph (model-ir/1) or plan (model-plan/1) JSON file, or any file a "
                                          "frontend reads")
        add_frontend_argument(parser)
        parser.add_argument("--method", default="auto",
                            help=f"scheduler: {', '.join(scheduler_names())} (default auto)")
        parser.add_argument("--solver", default=None,
                            help=f"MILP backend: {', '.join(sorted(providers('model_opt_solvers')))}")
        parser.add_argument("--time-limit", type=seconds(allow_zero=True), default=None, metavar="S",
                            help="seconds before returning the best order so far (default 60, inf for none)")
        parser.add_argument("--budget", type=byte_size(1), default=None, metavar="SIZE",
                            help="memory budget of the peak (e.g. 2GiB): recompute ops (run them again) when no "
                                 "order alone fits, at the fewest recomputed FLOPs found; exit status 1 when no "
                                 "plan fits it (below the lower bound), 3 when none was found, with nothing "
                                 "written")
        parser.add_argument("-o", "--output", metavar="PLAN.json", help="write the order as a model-plan/1 file")
        parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        parser.add_argument("--quiet", action="store_true", help="no progress on stderr")

    def run(self, args) -> int:
        if args.output is not None:  # checked before a solve of up to a minute
            stem, suffix = os.path.splitext(args.output)
            if suffix.lower() == ".csv":  # as place refuses: not a plan silently misnamed
                raise FormatError(f"-o {args.output}: schedule writes a model-plan/1 JSON; name the output "
                                  f"{stem}.json")
            check_output(args.output, force=args.force, inputs=[args.graph], flag="-o")
        graph = load_file(args.graph, args.frontend)
        result = schedule(graph, method=args.method, solver=args.solver, time_limit=args.time_limit,
                          progress=None if args.quiet else _print_progress, memory_budget=args.budget)
        exit_status = _budget_status(result)
        if args.output is not None and exit_status == 0:
            save_plan(plan_of(graph, result), args.output, overwrite=args.force)
        if args.json:
            print(json.dumps(result.to_dict()))
            return exit_status
        print(f"graph {graph.name}: {len(graph.ops)} ops, method {result.method} (best order from {result.source})")
        print(f"eager peak:      {human_bytes(result.eager_peak_bytes)}")
        print(f"optimized peak:  {human_bytes(result.peak_bytes)}")
        print(f"saving:          {human_bytes(result.saving_bytes)} "
              f"({share_of(result.saving_bytes, result.eager_peak_bytes, 'eager peak')})")
        status = "optimal" if result.optimal else f"gap {100 * result.gap:.2f}%"
        print(f"lower bound:     {human_bytes(result.lower_bound_bytes)} ({status})")
        if result.memory_budget is not None:
            print(f"memory budget:   {human_bytes(result.memory_budget)}: "
                  + ("fits" if result.fits_budget else "does NOT fit (the lowest peak found is shown)")
                  + ("; it is below the lower bound: no plan fits it, with any recomputation"
                     if result.memory_budget < result.lower_bound_bytes else "")
                  + f"; {result.recomputed_ops} recomputed ops, {result.recompute_flops:.3g} FLOPs"
                  + ("" if not result.recompute_flops_lower_bound or not result.recompute_flops  # 0: says nothing
                     else f" (no plan fitting it recomputes fewer than {result.recompute_flops_lower_bound:.3g})")
                  + f"; no order without recomputation peaks below {human_bytes(result.reorder_lower_bound_bytes)}"
                  + ("" if result.no_fit_within_runs is None else
                     f"; no plan running each op at most {result.no_fit_within_runs} times fits it (proven)"))
        note = " (interrupted: best so far)" if result.interrupted else ""
        print(f"time:            {result.seconds:.2f} s{note}")
        if args.output is not None:
            print(f"plan written to  {args.output}" if exit_status == 0 else f"nothing written to {args.output}: "
                  "the plan does not fit the budget")
        return exit_status


def _budget_status(result) -> int:
    """:func:`model_ir.cli_values.budget_status` of a schedule result."""
    return budget_status(result.memory_budget, result.fits_budget, result.lower_bound_bytes)
