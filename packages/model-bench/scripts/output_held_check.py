#!/usr/bin/env python3
"""Simulate the eager loop that holds the model's output through backward, for eager
runs measured with it (results without ``output_released``, see
``model_runtime.measured_runs.OUTPUT_HELD_NOTE``).

    uv run python packages/model-bench/scripts/output_held_check.py GPU.json [GPU.json ...] \\
        [--case MODEL:BATCH ...]

For each measured eager training run of the files (or the ``--case``s among them) the
step is captured twice for CUDA, as ``bench`` does (loss only: the output freed once
autograd is done with it) and with ``return_outputs=True`` (the output alive to the end
of the step, as in a loop that keeps ``out = model(x)`` through backward), and both
simulations are printed beside the measurement (MiB; the error in parentheses).
"""

from __future__ import annotations

import argparse
import json
import sys

MiB = 1 << 20


def _cell(sim: int, measured: int | None) -> str:
    if measured is None:
        return f"{sim / MiB:.0f} / -"
    return f"{sim / MiB:.0f} / {measured / MiB:.0f} ({100 * (sim - measured) / measured:+.1f}%)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gpu", nargs="+", help="results JSON of gpu_matrix.py, gpu_graphs.py or eager_on_gpu.py")
    p.add_argument("--case", action="append", default=[], help="MODEL:BATCH (default: every eager train run)")
    args = p.parse_args(argv)
    from model_bench.pipeline import build_case, simulate_eager_allocator
    from model_ir.torch import capture
    from model_ir.workspaces import with_workspaces
    from model_runtime.measured_runs import eager_output_held

    measured: dict[tuple, dict] = {}
    for path in args.gpu:
        with open(path) as f:
            for e in json.load(f):
                if eager_output_held(e["spec"], e["result"]) and "max_allocated_bytes" in e["result"]:
                    measured.setdefault((e["spec"]["model"], e["spec"]["batch_size"]), {})[e["alloc"]] = e["result"]
    wanted = [(m, int(b)) for m, b in (c.split(":") for c in args.case)] if args.case else sorted(measured)
    print("| model | batch | allocated, output freed: sim. / meas. | allocated, output held: sim. / meas. "
          "| reserved, output held: sim. / meas. | reserved exp. seg., output held: sim. / meas. |")
    print("|---|---|---|---|---|---|")
    for model, batch in wanted:
        runs = measured.get((model, batch), {})
        case = build_case(model, "train", batch)
        sims = []
        for held in (False, True):
            graph = with_workspaces(capture(case.model, case.inputs, loss_fn=case.loss_fn, optimizer=case.optimizer,
                                            targets=(case.target,), device="cuda", return_outputs=held))
            sims.append((simulate_eager_allocator(graph), simulate_eager_allocator(graph, expandable_segments=True)))
        allocated = runs.get("default", runs.get("expandable", {})).get("max_allocated_bytes")
        print(f"| {model} | {batch} | {_cell(sims[0][0].allocated_peak_bytes, allocated)} | "
              f"{_cell(sims[1][0].allocated_peak_bytes, allocated)} | "
              f"{_cell(sims[1][0].reserved_bytes, runs.get('default', {}).get('max_reserved_bytes'))} | "
              f"{_cell(sims[1][1].reserved_bytes, runs.get('expandable', {}).get('max_reserved_bytes'))} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
