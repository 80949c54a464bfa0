"""How far below its peak a memory budget takes a step: the transient peak the
recomputation planner reaches for budgets at shares of the unbudgeted transient peak.

Captures a torchvision model's training step as ``optimize(memory_budget=...)`` does
(``functional_inplace=True``), schedules it without a budget, then with each budget,
and prints the transient peak (peak minus persistent bytes) reached as a share of the
unbudgeted one, whether the budget was met, and the working-set lower bound (CPU).

    uv run python packages/model-runtime/benchmarks/budget_reach.py efficientnet_b0 --channels-last
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
import torchvision

from model_ir.torch import capture_step
from model_sched import schedule


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a torchvision.models builder, e.g. efficientnet_b0")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--shares", default="0.6,0.45,0.3")
    p.add_argument("--time-limit", type=float, default=10.0)
    args = p.parse_args(argv)
    builder = getattr(torchvision.models, args.model, None)
    if builder is None:
        p.error(f"torchvision.models has no {args.model!r}")
    torch.manual_seed(0)
    model = builder(num_classes=10)
    x = torch.randn(args.batch, 3, args.size, args.size)
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = capture_step(model, x, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4),
                             loss_fn=torch.nn.functional.cross_entropy, targets=(torch.randint(0, 10, (args.batch,)),),
                             functional_inplace=True).graph
    persistent = graph.persistent_bytes
    transient = schedule(graph, time_limit=args.time_limit).peak_bytes - persistent
    print(f"{args.model} b{args.batch} {args.size}px{' channels-last' if args.channels_last else ''}: "
          f"{len(graph.ops)} ops, transient peak {transient} B without a budget")
    for share in (float(s) for s in args.shares.split(",")):
        budget = persistent + int(share * transient)
        s = schedule(graph, time_limit=args.time_limit, memory_budget=budget)
        print(f"  budget at {share:.0%}: reached {(s.peak_bytes - persistent) / transient:.1%} "
              f"({'fits' if s.fits_budget else 'does not fit'}); lower bound "
              f"{(s.lower_bound_bytes - persistent) / transient:.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
