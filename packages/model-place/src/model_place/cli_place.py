"""``model-opt place``: place lifetimes from a MiniMalloc CSV, or the buffers of a
graph/plan JSON (or of any graph file a frontend reads), and write the placement.

Exit status: 0 when a placement within the capacity (or, without one, a
placement) was written; 1 when the capacity is proven infeasible; 3 when the time
limit ran out without a placement within the capacity; 2 for bad input. Nothing
is written with status 1 or 3.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from model_ir import FormatError, Graph, Lifetime, Plan, Schedule, program_order
from model_ir.cli_frontend import add_frontend_argument
from model_ir.cli_values import byte_size, seconds
from model_ir.formatting import human_bytes
from model_ir.frontends import frontend_for, load_file
from model_ir.output_files import check_output
from model_ir.json_format import (GRAPH_FORMAT, PLAN_FORMAT, graph_from_dict, parse_json, plan_from_dict,
                                  read_text, save_plan)

from model_place.csv_format import parse_lifetimes_csv, read_lifetimes_csv, write_placement_csv
from model_place.errors import PlaceError
from model_place.lifetimes import lifetimes_from_graph
from model_place.placers import place, placer_names
from model_place.result import PlacementResult

EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3


class ScheduleInterrupted(Exception):
    """Ctrl-C stopped the ``--schedule`` scheduler; ``schedule`` is its best order so far."""

    def __init__(self, schedule: Schedule):
        super().__init__("interrupted")
        self.schedule = schedule


def _schedule_for(graph, name: str, time_limit: float | None = None) -> Schedule:
    """The op order to place a graph under: program order, or a model-sched scheduler
    run within ``time_limit`` seconds (None: its default). Raises
    :class:`ScheduleInterrupted` when Ctrl-C stopped the scheduler."""
    if name == "program":
        return program_order(graph)
    try:
        from model_sched import schedule as run_scheduler  # optional layer, may be absent
    except ImportError:
        raise PlaceError(f"--schedule {name}: model-sched is not installed; use --schedule program "
                         "or pass a plan JSON that has an order") from None
    result = run_scheduler(graph, method=name, time_limit=time_limit)  # a model_sched.ScheduleResult
    if getattr(result, "interrupted", False):
        raise ScheduleInterrupted(Schedule(result.order))
    return Schedule(result.order)


def load_input(path: str, frontend: str | None) -> Plan | Graph | tuple[Lifetime, ...]:
    """What ``path`` holds: a plan or a graph (JSON, or a file ``frontend`` reads; default:
    the frontend declaring the file's suffix), or a MiniMalloc CSV's lifetimes (``.csv``,
    or a file neither ``.json`` nor a JSON object inside). Read once: a pipe (``<(zcat g.json.gz)``)
    cannot be read again."""
    if frontend is None and path.lower().endswith(".csv"):
        return read_lifetimes_csv(path)
    sniff = frontend is None and not path.lower().endswith(".json")
    frontend = frontend or frontend_for(path)
    if frontend != "json":
        return load_file(path, frontend)
    text = read_text(path)
    if sniff and not text.lstrip().startswith("{"):
        return parse_lifetimes_csv(text, path)
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a {GRAPH_FORMAT!r} or {PLAN_FORMAT!r} JSON object, got "
                          f"{type(data).__name__}")
    fmt = data.get("format")
    if fmt == PLAN_FORMAT:
        return plan_from_dict(data, path)
    if fmt == GRAPH_FORMAT:
        return graph_from_dict(data, path)
    raise FormatError(f"{path}: expected a {GRAPH_FORMAT!r} or {PLAN_FORMAT!r} JSON file, format is {fmt!r}")


def ordered_input(loaded: Plan | Graph | tuple[Lifetime, ...], schedule: str | None,
                  time_limit: float | None = None, interrupted: list | None = None) -> tuple[Plan | None, list]:
    """The plan (None for a CSV) and the lifetimes to place, from :func:`load_input`'s
    result: a graph is placed under the ``schedule`` order (default program order; a
    scheduler gets ``time_limit`` seconds), a plan under its own (``schedule`` given for a
    plan or a CSV: :class:`PlaceError`). When Ctrl-C stops the scheduler, its best order
    so far is used and True is appended to ``interrupted`` (if given)."""
    if isinstance(loaded, tuple):
        _no_schedule(schedule, "a CSV's lifetimes are placed as they are")
        return None, list(loaded)
    if isinstance(loaded, Plan):
        _no_schedule(schedule, "a plan is placed under its own order")
        plan = loaded
    else:
        plan = Plan(loaded, _ordered(loaded, schedule or "program", time_limit, interrupted))
    return plan, lifetimes_from_graph(plan.graph, plan.schedule)


def _check_output_suffix(output: str, csv: bool) -> None:
    """The output is written in the input's kind (a CSV's placement as CSV, a graph's or
    plan's as a plan): an ``-o`` name saying the other is refused, not silently misnamed."""
    stem, suffix = os.path.splitext(output)
    wanted, other = (".csv", ".json") if csv else (".json", ".csv")
    if suffix.lower() == other:
        writes = "a CSV" if csv else "a model-plan/1 JSON"
        raise PlaceError(f"-o {output}: place writes {writes} for this input, the placement of its own kind; "
                         f"name the output {stem}{wanted}")


def _no_schedule(schedule: str | None, why: str) -> None:
    if schedule is not None:
        raise PlaceError(f"--schedule {schedule}: orders the ops of a graph, and {why}; drop --schedule")


def _ordered(graph, schedule: str, time_limit: float | None, interrupted: list | None) -> Schedule:
    try:
        return _schedule_for(graph, schedule, time_limit)
    except ScheduleInterrupted as e:
        if interrupted is not None:
            interrupted.append(True)
        return e.schedule


def summary(result: PlacementResult, buffers: int) -> dict:
    """The JSON object ``--json`` prints (bytes and seconds)."""
    return {
        "status": result.status, "method": result.method, "buffers": buffers,
        "arena_bytes": result.arena_bytes, "lower_bound_bytes": result.lower_bound_bytes,
        "gap": result.gap, "optimal": result.optimal, "capacity": result.capacity,
        "seconds": round(result.seconds, 6), "details": dict(result.details),
    }


def print_progress(p) -> None:
    """One stderr line per decision of the exact search (terminals only)."""
    print(f"  [{p.seconds:7.2f} s] capacity {p.capacity} B: {p.outcome}; best arena {p.arena_bytes} B, "
          f"bound {p.lower_bound_bytes} B", file=sys.stderr, flush=True)


class PlaceCommand:
    name = "place"
    help = "assign an address to every buffer (MiniMalloc CSV, or a graph/plan JSON or other graph file)"

    def add_arguments(self, parser) -> None:
        parser.add_argument("input", help="lifetimes CSV (id,lower,upper,size[,alignment]), graph/plan JSON, "
                                          "or a graph file a frontend reads")
        add_frontend_argument(parser, "a graph input (a .csv file is lifetimes)")
        parser.add_argument("-o", "--output", required=True,
                            help="where to write the placement: CSV with an offset column, or a plan JSON")
        parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
        parser.add_argument("--capacity", type=byte_size(0), default=None, metavar="SIZE",
                            help="arena size to fit (decide feasibility) instead of minimising the arena: bytes, "
                                 "or with a unit as 64MiB or 1GB")
        parser.add_argument("--method", default="auto",
                            help=f"placer: {', '.join(placer_names())} (default auto = exact search)")
        parser.add_argument("--time-limit", type=seconds(allow_zero=True), default=None,
                            help="seconds for the whole command (default: 60 for exact methods): a --schedule "
                                 "scheduler gets half, the placer the rest; the best placement so far is kept")
        parser.add_argument("--schedule", default=None,
                            help="for a graph: op order to place under (program, the default, or a model-sched "
                                 "scheduler name); a plan is placed under its own order, a CSV as its lifetimes")
        parser.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")

    def run(self, args) -> int:
        check_output(args.output, force=args.force, inputs=[args.input], flag="-o")
        known = placer_names()
        if args.method not in known:
            raise PlaceError(f"unknown placer {args.method!r}; available: {', '.join(known)}")
        interrupted: list = []
        t0 = time.perf_counter()
        # One budget for the whole command: a --schedule scheduler gets half of it, the
        # placer what is left.
        scheduler_limit = None if args.time_limit is None else args.time_limit / 2
        loaded = load_input(args.input, args.frontend)
        # before a --schedule solve: the output is of the input's kind
        _check_output_suffix(args.output, csv=isinstance(loaded, tuple))
        plan, lifetimes = ordered_input(loaded, args.schedule, scheduler_limit, interrupted)
        time_limit = args.time_limit
        if time_limit is not None and not math.isinf(time_limit):
            time_limit = max(0.0, time_limit - (time.perf_counter() - t0))
        if interrupted:
            # Ctrl-C stopped the --schedule scheduler: place under its best order so far
            # at once (no time for an exact search), rather than start another long run
            print("model-opt: interrupted: placing under the best schedule found so far", file=sys.stderr)
            time_limit = 0.0
        result = place(lifetimes, method=args.method, capacity=args.capacity, time_limit=time_limit,
                       progress=None if args.json or not sys.stderr.isatty() else print_progress)
        code = {"infeasible": EXIT_INFEASIBLE, "over_capacity": EXIT_TIMEOUT}.get(result.status, EXIT_OK)
        if code == EXIT_OK:
            if plan is not None:
                figures = dict(plan.figures)
                figures.update({
                    "arena_bytes": result.arena_bytes, "placement_lower_bound_bytes": result.lower_bound_bytes,
                    "placement_method": result.method, "placement_seconds": result.seconds,
                    "placement_gap": result.gap, "placement_status": result.status,
                })
                save_plan(Plan(plan.graph, plan.schedule, result.placement(), figures), args.output,
                          overwrite=args.force)
            else:
                write_placement_csv(args.output, lifetimes, result.offsets, overwrite=args.force)
        if args.json:
            print(json.dumps(summary(result, len(lifetimes))))
        else:
            self._report(result, len(lifetimes), args.output if code == EXIT_OK else None)
        return code

    @staticmethod
    def _report(result: PlacementResult, buffers: int, written: str | None) -> None:
        # as schedule says it: Ctrl-C ended the search, its best placement is the answer
        note = " (interrupted: best so far)" if result.details.get("stopped") == "interrupted" else ""
        print(f"{result.method}: {buffers} buffers, arena {human_bytes(result.arena_bytes)}, "
              f"lower bound {human_bytes(result.lower_bound_bytes)}, gap {100 * result.gap:.2f}%, "
              f"{result.seconds:.3f} s, status {result.status}{note}")
        if written:
            print(f"wrote {written}")
        elif result.status == "infeasible":
            print(f"model-opt: capacity {result.capacity} bytes is proven infeasible; nothing written",
                  file=sys.stderr)
        else:
            print(f"model-opt: {result.method} found no placement within {result.capacity} bytes "
                  "(time limit, or a heuristic), and did not prove none exists; nothing written",
                  file=sys.stderr)
