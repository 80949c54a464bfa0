#!/usr/bin/env python3
"""Write cuDNN's measured convolution workspaces into model_ir.cudnn_workspaces.

    uv run python packages/model-bench/scripts/conv_workspaces_from_traces.py \\
        packages/model-runtime/benchmarks/results/h200-torch2.11-2026-11-30-eager-traces.json [MORE.json ...] \\
        [--out packages/model-ir/src/model_ir/cudnn_workspaces.py]

Each TRACES file is what ``eager_on_gpu.py OUT --trace`` writes: eager steps with the
caching allocator's events of their last step (measure on one GPU and torch version). Each run's step is captured here (for CUDA, as
``model-opt bench`` does) and its forward convolutions are aligned with the events
(``model_bench.workspace_calibration``). A shape seen twice with different workspaces
keeps the larger (each of a backward's two), and is reported.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "model-ir" / "src" / "model_ir" / "cudnn_workspaces.py"

HEADER = '''"""cuDNN's convolution workspaces measured on a GPU (generated: do not edit).

Written by ``packages/model-bench/scripts/conv_workspaces_from_traces.py`` from the
caching allocator's events of eager steps:
{source}
({measured_on}). Key: (input shape, weight shape, output shape, dtype) of a contiguous
(NCHW/NCDHW) convolution; value: the bytes cuDNN took for the call's workspace (0:
none); backward: the input gradient's and then the weight gradient's workspace, each
allocated right after its gradient and freed at once.
:func:`model_ir.workspaces.conv_workspace_bytes` uses them before its formula; other
GPUs and cuDNN versions may choose other algorithms.
"""

MEASURED_ON = {measured_on!r}
SOURCE = {source!r}
'''


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="results JSON of eager_on_gpu.py --trace")
    p.add_argument("--out", default=str(OUT), help="module to write (default: %(default)s)")
    args = p.parse_args(argv)
    from model_bench.pipeline import capture_model
    from model_bench.workspace_calibration import conv_workspaces

    runs = [run for path in args.traces for run in json.loads(Path(path).read_text())]
    tables: dict[str, dict] = {"FORWARD": {}, "BACKWARD": {}}
    gpus = set()
    for run in runs:
        spec, result = run["spec"], run["result"]
        trace = result.get("memory_trace")
        if not isinstance(trace, list):
            continue
        gpus.add(f"{result.get('gpu')}, torch {result.get('torch')}")
        _, graph = capture_model(spec["model"], spec["mode"], spec["batch_size"], optimizer=spec["optimizer"],
                                 seconds={})
        for name, found in zip(tables, conv_workspaces(graph, trace)):
            table = tables[name]
            for key, size in found.items():
                if key in table and table[key] != size:
                    print(f"{spec['model']}: {name.lower()} {key} measured {size} and {table[key]} bytes; "
                          "keeping the larger", file=sys.stderr)
                old = table.get(key, size)
                table[key] = (max(size, old) if isinstance(size, int)
                              else tuple(max(a, b) for a, b in zip(size, old)))
            print(f"{spec['model']} {spec['mode']} b{spec['batch_size']}: {len(found)} {name.lower()} convolutions")
    dates = sorted({m.group() for path in args.traces if (m := re.search(r"\d{4}-\d{2}-\d{2}", Path(path).name))})
    measured_on = "; ".join(sorted(gpus)) + (f", {', '.join(dates)}" if dates else "")
    text = HEADER.format(source=", ".join(Path(path).name for path in args.traces), measured_on=measured_on)
    for name, table in tables.items():
        text += f"\n{name} = {{\n" + "".join(f"    {key!r}: {table[key]},\n" for key in sorted(table, key=repr)) + "}\n"
    Path(args.out).write_text(text)
    print(f"wrote {args.out}: {len(tables['FORWARD'])} forward and {len(tables['BACKWARD'])} backward shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
