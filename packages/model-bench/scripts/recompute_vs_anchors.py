#!/usr/bin/env python3
"""Recomputation: this project's planner against torch.compile's memory budget and
checkpointing every block (issue 13), simulated, on the CPU.

    uv run python packages/model-bench/scripts/recompute_vs_anchors.py \\
        --anchors packages/model-bench/benchmarks/results/recompute/anchors.json \\
        --out packages/model-bench/benchmarks/results/recompute

The anchors file comes from ``recompute_anchors.py`` (same models, same batches). For
each model the step the anchors ran (forward, loss, backward, gradients kept; no
optimizer) is captured (fake tensors, FLOPs per op) and planned: without
recomputation, then with each anchor's measured peak as memory budget (for anchors
without peaks: the planner's peak less the bytes the anchor stops saving), then at
--fractions of its own transient peak. The
planner's figures are the simulator's; the anchors' are measured by running them
(see model_bench.recompute_anchors). FLOPs: torch.utils.flop_counter for both.
Writes recompute_vs_anchors.{json,csv,md,png} to --out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from model_bench.progress import Progress
from model_bench.reports import fmt_bytes
from model_ir.errors import ModelOptError
from model_ir.output_files import check_output, write_output

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "recompute"
COLUMNS = ("model", "batch_size", "method", "matched", "budget", "memory_budget", "fits", "peak_bytes", "cut_bytes",
           "saved_activation_bytes", "recomputed_ops", "recomputed_flops", "recompute_overhead", "lower_bound_bytes",
           "recompute_flops_lower_bound", "overhead_lower_bound", "seconds")


def capture_anchor_step(name: str, batch: int, device: str):
    """The graph of the step the anchors measure: forward, loss and backward of the zoo
    model, gradients kept to the end (as ``.grad``), no optimizer."""
    from model_bench.zoo import build_case
    from model_ir.torch import capture_step

    case = build_case(name, "train", batch, device="meta")
    return capture_step(case.model, case.inputs, loss_fn=case.loss_fn, targets=(case.target,), optimizer=None,
                        keep_grads=True, granularity=64 if device == "cpu" else 512, device=device,
                        name=name, functional_inplace=True).graph


def parse_fractions(text: str) -> list[float]:
    try:
        out = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions, e.g. 0.7,0.5") from None
    if any(not 0.0 < f < 1.0 for f in out):
        raise argparse.ArgumentTypeError(f"{text!r}: fractions must be between 0 and 1")
    return out


def _bound(row: dict | None) -> str:
    bound = None if row is None else row.get("overhead_lower_bound")
    return "-" if bound is None else f"{bound:.1%}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Recomputation, {meta['device']} step (forward, loss, backward), {meta['date']}: the planner's "
             f"figures are simulated (torch {meta['torch']}); the anchors' are measured on the CPU (anchors file). "
             "Overhead: recomputed FLOPs per forward FLOP (torch.utils.flop_counter); bound: no plan at that "
             "peak recomputes less (model_sched.recompute_exact.recompute_flops_lower_bound).", "",
             "| model | anchor | anchor peak | anchor overhead | model-opt overhead at that peak | bound |",
             "|---|---|---:|---:|---:|---:|"]
    by_key = {(r["model"], r["batch_size"], r["matched"], r["method"]): r for r in rows}
    for r in rows:
        if r["method"] == "model-opt":
            continue
        ours = by_key.get((r["model"], r["batch_size"], r["matched"], "model-opt"))
        mine = ("-" if ours is None else
                f"{ours['recompute_overhead']:.1%}" + ("" if ours["fits"] else " (does not fit)"))
        at = (fmt_bytes(r["peak_bytes"]) if r.get("peak_bytes") is not None
              else f"cut {fmt_bytes(r['cut_bytes'])} of saved")
        lines.append(f"| {r['model']} b{r['batch_size']} | {r['matched']} | {at} | "
                     f"{r['recompute_overhead']:.1%} | {mine} | {_bound(ours)} |")
    lines += ["", "| model | model-opt at its own budgets | peak | cut | overhead | bound |",
              "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["method"] == "model-opt" and ("transient" in r["matched"] or r["matched"] == "no-recompute"):
            lines.append(f"| {r['model']} b{r['batch_size']} | {r['matched']} | {fmt_bytes(r['peak_bytes'])} | "
                         f"{fmt_bytes(r['cut_bytes'])} | "
                         + (f"{r['recompute_overhead']:.1%}" + ("" if r["fits"] else " (does not fit)"))
                         + f" | {_bound(r)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys((r["model"], r["batch_size"]) for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    styles = {"torch.compile": ("tab:orange", "s"), "checkpoint-every-block": ("tab:red", "^"),
              "model-opt": ("tab:blue", "o")}
    for ax, (name, batch) in zip(axes[0], models):
        mine = [r for r in rows if (r["model"], r["batch_size"]) == (name, batch)]
        # Peaks when the anchors measured theirs (the same step), else cuts of each one's own baseline.
        by_peak = all(r.get("peak_bytes") is not None for r in mine)
        x = "peak_bytes" if by_peak else "cut_bytes"
        for method, (color, marker) in styles.items():
            pts = sorted((r[x] / 2**30, r["recompute_overhead"]) for r in mine
                         if r["method"] == method and r.get("fits", True) and r["recompute_overhead"] is not None)
            if pts:
                ax.plot(*zip(*pts), marker=marker, color=color, label=method,
                        linestyle="-" if method != "checkpoint-every-block" else "none")
        ax.set_title(f"{name} b{batch}")
        ax.set_xlabel("peak memory (GiB)" if by_peak else "memory cut (GiB)")
        ax.set_ylabel("recomputed FLOPs / forward FLOPs")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchors", default=str(HERE / "anchors.json"), metavar="FILE.json",
                   help="rows of recompute_anchors.py (default: the committed CPU measurements)")
    p.add_argument("--models", metavar="A,B", help="only these models of the anchors file")
    p.add_argument("--fractions", type=parse_fractions, default=parse_fractions("0.7,0.5,0.3,0.2"),
                   metavar="F,...", help="the planner alone at these fractions of its transient peak")
    p.add_argument("--time-limit", type=float, default=20.0, metavar="S", help="seconds per plan (default 20)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="capture for this device's kernels (default cpu, the anchors' device)")
    p.add_argument("--out", required=True, metavar="DIR", help="write recompute_vs_anchors.{json,csv,md,png} here")
    p.add_argument("--force", action="store_true", help="replace the --out files if they exist")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    paths = {ext: out / f"recompute_vs_anchors.{ext}" for ext in ("json", "csv", "md", "png")}
    try:
        if out.exists():  # else it is made before writing
            for path in paths.values():
                check_output(str(path), force=args.force, flag="--out")
    except ModelOptError as e:
        print(f"recompute_vs_anchors: error: {e}", file=sys.stderr)
        return 2
    try:
        anchors = json.loads(Path(args.anchors).read_text())["rows"]
    except (OSError, ValueError, KeyError) as e:
        print(f"recompute_vs_anchors: error: cannot read the anchors {args.anchors}: {e}", file=sys.stderr)
        return 2
    import datetime

    import torch

    from model_bench.recompute_compare import compare

    wanted = set(args.models.split(",")) if args.models else None
    models = list(dict.fromkeys((r["model"], r["batch_size"]) for r in anchors
                                if wanted is None or r["model"] in wanted))
    rows: list[dict] = []
    for name, batch in models:
        progress = Progress(quiet=args.quiet, prefix=f"[{name} b{batch}] ")
        graph = capture_anchor_step(name, batch, args.device)
        mine = [r for r in anchors if (r["model"], r["batch_size"]) == (name, batch)]
        for r in compare(graph, mine, fractions=args.fractions, time_limit=args.time_limit, progress=progress.say):
            rows.append({"model": name, "batch_size": batch, **r})
    meta = {"device": args.device, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
            "anchors": args.anchors, "time_limit": args.time_limit}
    table = markdown(rows, meta)
    print(table)
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    out.mkdir(parents=True, exist_ok=True)
    write_output(str(paths["json"]), json.dumps({**meta, "rows": rows}, indent=2) + "\n", overwrite=args.force,
                 flag="--out")
    write_output(str(paths["csv"]), text.getvalue(), overwrite=args.force, flag="--out")
    write_output(str(paths["md"]), table, overwrite=args.force, flag="--out")
    write_output(str(paths["png"]), plot(rows), overwrite=args.force, flag="--out")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
