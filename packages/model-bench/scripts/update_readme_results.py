#!/usr/bin/env python3
"""Replace the ``<!-- results:start -->`` ... ``<!-- results:end -->`` block of a README
with the table of a ``model-opt bench suite`` run.

    uv run model-opt bench suite --out bench-out/suite
    uv run python packages/model-bench/scripts/update_readme_results.py README.md bench-out/suite

RESULTS is the suite's output directory, its ``results.json`` or its ``results_table.md``.
"""

from __future__ import annotations

import argparse
import sys

from model_bench.readme_results import update_readme
from model_ir.errors import ModelOptError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("readme", help="README file with a results block")
    p.add_argument("results", help="suite output directory, results.json or results_table.md")
    p.add_argument("--command", default="uv run model-opt bench suite",
                   help="command named under the table (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        changed = update_readme(args.readme, args.results, command=args.command)
    except ModelOptError as e:
        print(f"update_readme_results: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
