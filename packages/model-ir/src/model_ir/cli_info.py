"""``model-opt info GRAPH``: sizes and memory figures of a graph in program order."""

from __future__ import annotations

import json

from model_ir.cli_frontend import add_frontend_argument
from model_ir.formatting import human_bytes
from model_ir.frontends import load_file
from model_ir.simulator import simulate, working_set_bound


def graph_info(graph) -> dict:
    """The figures ``info`` prints, as a JSON-ready dict (bytes)."""
    profile = simulate(graph)
    return {
        "name": graph.name,
        "ops": len(graph.ops),
        "buffers": len(graph.buffers),
        "persistent_bytes": graph.persistent_bytes,
        "peak_bytes": profile.peak_bytes,
        "transient_peak_bytes": profile.transient_peak_bytes,
        # freed when eager PyTorch frees them (released_after): bench's and schedule's eager peak
        "eager_peak_bytes": simulate(graph, eager=True).peak_bytes,
        "working_set_bound_bytes": working_set_bound(graph),
    }


class InfoCommand:
    name = "info"
    help = "show op/buffer counts and program-order peak memory of a graph file"

    def add_arguments(self, parser) -> None:
        parser.add_argument("graph", help="graph (model-ir/1) or plan (model-plan/1) JSON file, or any file a "
                                          "frontend reads")
        add_frontend_argument(parser)
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def run(self, args) -> int:
        info = graph_info(load_file(args.graph, args.frontend))
        if args.json:
            print(json.dumps(info))
            return 0
        print(f"graph {info['name']}: {info['ops']} ops, {info['buffers']} buffers")
        print(f"persistent:            {human_bytes(info['persistent_bytes'])}")
        print(f"peak (program order):  {human_bytes(info['peak_bytes'])}"
              f"  (transient {human_bytes(info['transient_peak_bytes'])}; each buffer freed after its last use)")
        print(f"eager peak:            {human_bytes(info['eager_peak_bytes'])}  (program order, buffers freed when "
              "eager PyTorch frees them: bench's and schedule's eager peak)")
        print(f"largest op working set bound: {human_bytes(info['working_set_bound_bytes'])}")
        return 0
