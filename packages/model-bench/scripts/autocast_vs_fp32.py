#!/usr/bin/env python3
"""Mixed precision against full precision, from two ``bench`` runs of the same models.

    uv run model-opt bench --models gpt2,bert-base --batch-sizes 1,32 --out fp32 --no-artifacts
    uv run model-opt bench --models gpt2,bert-base --batch-sizes 1,32 --autocast bf16 --out amp --no-artifacts
    uv run python packages/model-bench/scripts/autocast_vs_fp32.py fp32/results.json amp/results.json

Prints a Markdown table (MiB, simulated): per run, the strongest eager baseline and the
plan (persistent + arena + workspace) in fp32 and under autocast, the plan's saving
against the strongest baseline in each, and what autocast changes in the plan. Exit
status 2 on a file that is not a bench results file.
"""

from __future__ import annotations

import json
import sys

MiB = 2**20


def _runs(path: str) -> dict[tuple, dict]:
    try:
        results = json.load(open(path))["results"]
        return {(r["model"], r["mode"], r["batch_size"]): r for r in results if not r.get("error")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"autocast_vs_fp32: {path}: not a bench results file ({e})") from None


def table(full: dict[tuple, dict], mixed: dict[tuple, dict]) -> str:
    lines = ["| model | mode | batch | strongest eager, fp32 | plan, fp32 | saving | strongest eager, bf16 AMP "
             "| plan, bf16 AMP | saving | plan: AMP vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(full.keys() & mixed.keys()):
        f, m = full[key], mixed[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {f['strongest_baseline_bytes'] / MiB:.0f} "
            f"| {f['optimized_total_bytes'] / MiB:.0f} | {f['saving_vs_strongest']:.1%} "
            f"| {m['strongest_baseline_bytes'] / MiB:.0f} | {m['optimized_total_bytes'] / MiB:.0f} "
            f"| {m['saving_vs_strongest']:.1%} | {m['optimized_total_bytes'] / f['optimized_total_bytes'] - 1:+.1%} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    full, mixed = (_runs(p) for p in argv)
    if any(r.get("autocast") for r in full.values()) or not all(r.get("autocast") for r in mixed.values()):
        print("autocast_vs_fp32: give the fp32 results first, then the autocast ones", file=sys.stderr)
        return 2
    print(table(full, mixed))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
