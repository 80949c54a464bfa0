#!/usr/bin/env python3
"""Measure the recomputation anchors of issue 13 on zoo models, on the CPU.

    uv run python packages/model-bench/scripts/recompute_anchors.py --models vit_b_16:32 \\
        --out bench-out/recompute_anchors.json

For every MODEL:BATCH, one training step (model and loss, SGD is not involved) is
measured three ways: eager PyTorch without recomputation, torch.utils.checkpoint on
every block, and torch.compile's activation memory budget at each of --budgets (the
min-cut partitioner without code generation). The table gives the saved activation
bytes, their share of the same step without recomputation ("% of none": eager's for
the eager policies, the default partition of the same compiled graph for
torch.compile), the measured peak of the step's live storage bytes (parameters,
inputs, activations and gradients, storage sizes rounded up to 64 bytes) and its share
of eager's peak without recomputation ("peak %", the same baseline for every method),
and the forward, backward and recomputed GFLOPs (FlopCounterMode: matmuls,
convolutions, attention). The step runs on real tensors, so a model and batch must fit
the machine's memory; torch.compile's step runs twice (the compiling call's forward
pass, then a full step for the peak).

--out FILE.json writes the rows as JSON and, beside it, FILE.csv. Ctrl-C stops after
the current measurement is abandoned and writes the rows measured so far.
"""

from __future__ import annotations

import argparse
import csv
import io
import datetime
import json
import os
import platform
import sys
import time

from model_bench.progress import Progress
from model_bench.reports import fmt_bytes
from model_ir.errors import ModelOptError
from model_ir.output_files import check_output, write_output

DEFAULT_MODELS = "vit_b_16:32,bert-base:32,gpt2:8,resnet50:32"
DEFAULT_BUDGETS = "0.9,0.7,0.5,0.3"
COLUMNS = ("model", "batch_size", "method", "budget", "saved_activation_bytes", "no_recompute_saved_bytes",
           "saved_fraction", "peak_bytes", "no_recompute_peak_bytes", "peak_fraction", "forward_flops",
           "backward_flops", "recomputed_flops", "recompute_overhead", "graphs", "fullgraph", "seconds")


def parse_models(text: str) -> list[tuple[str, int]]:
    models = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, batch = item.rpartition(":")
        if not sep or not name or not batch.isdigit() or int(batch) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected MODEL:BATCH, e.g. vit_b_16:32")
        models.append((name, int(batch)))
    if not models:
        raise argparse.ArgumentTypeError("no model given")
    return models


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected budgets between 0 and 1, e.g. 0.9,0.5") from None
    if not budgets or any(not 0.0 <= b <= 1.0 for b in budgets):
        raise argparse.ArgumentTypeError(f"{text!r}: expected budgets between 0 and 1, e.g. 0.9,0.5")
    return budgets


def measure(name: str, batch: int, budgets: list[float], progress: Progress, rows: list[dict]) -> None:
    """Append the rows of one model to ``rows`` as they are measured."""
    from model_bench.recompute_anchors import (
        blocks_of,
        checkpoint_every_block,
        no_recompute,
        torch_compile_budget,
    )
    from model_bench.zoo import build_case

    progress.say(f"building at batch {batch} on the CPU")
    case = build_case(name, "train", batch, device="cpu")
    args = (case.model, case.inputs, case.loss_fn, case.target)

    def record(stage: str, run):
        progress.say(f"{stage} ...")
        t0 = time.perf_counter()
        point = run()
        seconds = time.perf_counter() - t0
        progress.say(f"{stage}: saved {fmt_bytes(point.saved_activation_bytes)}, peak {fmt_bytes(point.peak_bytes)} "
                     f"({point.peak_fraction:.1%} of eager's), recomputed {point.recompute_overhead:.1%} of the "
                     f"forward pass ({seconds:.1f} s)")
        rows.append({"model": name, "batch_size": batch, **point.to_dict(), "seconds": round(seconds, 2)})
        return point

    base = record("no recomputation", lambda: no_recompute(*args))
    try:
        blocks = blocks_of(name, case.model)
    except ModelOptError as e:
        progress.say(f"checkpoint on every block skipped: {e}")
    else:
        record(f"checkpoint on {len(blocks)} blocks", lambda: checkpoint_every_block(*args, blocks, baseline=base))
    for budget in budgets:
        record(f"torch.compile budget {budget:g}", lambda: torch_compile_budget(*args, budget, baseline=base))


def table(rows: list[dict]) -> str:
    head = ("model", "batch", "method", "budget", "saved", "% of none", "peak", "peak %", "fwd GFLOP",
            "bwd GFLOP", "recomp GFLOP", "overhead", "graphs")
    lines = []
    for r in rows:
        lines.append((
            r["model"], str(r["batch_size"]), r["method"], "-" if r["budget"] is None else f"{r['budget']:g}",
            fmt_bytes(r["saved_activation_bytes"]), f"{r['saved_fraction']:.1%}",
            fmt_bytes(r["peak_bytes"]), f"{r['peak_fraction']:.1%}",
            f"{r['forward_flops'] / 1e9:.4g}", f"{r['backward_flops'] / 1e9:.4g}",
            f"{r['recomputed_flops'] / 1e9:.4g}", f"{r['recompute_overhead']:.1%}",
            str(r["graphs"]) + ("" if r["fullgraph"] in (None, True) else " (breaks)"),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*x) for x in lines)])


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return out.getvalue()


def source(argv: list[str]) -> str:
    """Where the rows come from: the command, the machine, torch's version and the date."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    command = " ".join(["packages/model-bench/scripts/recompute_anchors.py", *argv])
    return (f"{command}; on the CPU ({cores} cores{memory}, {platform.machine()} {platform.system()}), "
            f"torch {torch.__version__}, {datetime.date.today().isoformat()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=parse_models, default=parse_models(DEFAULT_MODELS), metavar="MODEL:BATCH,...",
                   help=f"zoo models and batch sizes (default {DEFAULT_MODELS})")
    p.add_argument("--budgets", type=parse_budgets, default=parse_budgets(DEFAULT_BUDGETS), metavar="B,...",
                   help=f"torch.compile activation memory budgets, 0..1 (default {DEFAULT_BUDGETS})")
    p.add_argument("--out", metavar="FILE.json", help="write the rows as JSON to FILE.json and as CSV to FILE.csv")
    p.add_argument("--force", action="store_true", help="replace the --out files if they exist")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    outputs = None
    try:
        if args.out:
            stem, ext = os.path.splitext(args.out)
            outputs = (args.out, (stem if ext == ".json" else args.out) + ".csv")
            for path in outputs:  # before minutes of measuring
                check_output(path, force=args.force, flag="--out")
        from model_bench.zoo import get_model

        for name, _ in args.models:
            get_model(name)
    except ModelOptError as e:
        print(f"recompute_anchors: error: {e}", file=sys.stderr)
        return 2

    rows: list[dict] = []
    interrupted = False
    try:
        for name, batch in args.models:
            measure(name, batch, args.budgets, Progress(quiet=args.quiet, prefix=f"[{name} b{batch}] "), rows)
    except KeyboardInterrupt:
        interrupted = True
        print("recompute_anchors: interrupted; keeping the rows measured so far", file=sys.stderr)
    print(table(rows) if rows else "nothing measured")
    if outputs:
        from model_bench.recompute_anchors import PEAK_GRANULARITY

        report = {"source": source(argv), "models": [f"{n}:{b}" for n, b in args.models],
                  "budgets": args.budgets, "peak_granularity": PEAK_GRANULARITY, "interrupted": interrupted,
                  "rows": rows}
        try:
            write_output(outputs[0], json.dumps(report, indent=2) + "\n", overwrite=args.force, flag="--out")
            write_output(outputs[1], csv_text(rows), overwrite=args.force, flag="--out")
        except ModelOptError as e:
            print(f"recompute_anchors: error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {outputs[0]} and {outputs[1]}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
