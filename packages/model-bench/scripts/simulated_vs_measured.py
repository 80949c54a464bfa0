#!/usr/bin/env python3
"""Print the simulated eager memory of a suite next to eager steps measured on a GPU.

    uv run model-opt bench suite --out bench-out/suite
    uv run python packages/model-bench/scripts/simulated_vs_measured.py bench-out/suite/results.json \\
        packages/model-runtime/benchmarks/results/h200-torch2.11-2026-11-30.json

The other files are what ``packages/model-runtime/benchmarks/gpu_matrix.py run`` (or
``gpu_graphs.py run``) writes;
every eager run it holds is matched with the suite's run of the same model, mode and
batch size. The table gives simulated / measured MiB and the simulation's error.
"""

from __future__ import annotations

import argparse
import json
import sys

from model_bench.reports import load_results, simulated_vs_measured
from model_ir.errors import ModelOptError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", help="results.json of a bench suite (simulated)")
    p.add_argument("gpu", nargs="+", help="results JSON of gpu_matrix.py or gpu_graphs.py (measured)")
    args = p.parse_args(argv)
    try:
        results = load_results(args.suite)
        gpu = []
        for path in args.gpu:
            with open(path) as f:
                gpu += json.load(f)
    except (ModelOptError, OSError, json.JSONDecodeError) as e:
        print(f"simulated_vs_measured: error: {e}", file=sys.stderr)
        return 2
    table = simulated_vs_measured(results, gpu)
    print(table or "no run of the suite was measured on the GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
