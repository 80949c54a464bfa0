"""Zero-slack instances (issue 15 item 5): the arena at the time limit over the bound.

    uv run python packages/model-place/benchmarks/hard_instances.py [--sizes 170,400,1000,2400]
        [--seeds 0,1] [--methods auto,skyline] [--time-limit 60] [--out results.json]

Each instance is ``zero_slack_instance(n, seed=s)`` (1 MiB x 2n steps cut into n
buffers, 4 pinwheels; its optimal arena is the bound, 1 MiB). Prints one line per
instance and method (arena / bound, seconds, status), then per method how many
instances were closed (arena == bound) and the median ratio; writes the rows and
the summary as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from model_place import place
from model_place.hard_instances import zero_slack_instance


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="170,400,1000,2400", help="buffers per instance")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--methods", default="auto,skyline")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per instance and method")
    p.add_argument("--pinwheels", type=int, default=4)
    p.add_argument("--out", help="write the rows and the summary as JSON to this file")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for seed in (int(x) for x in args.seeds.split(",")):
            lts = zero_slack_instance(n, seed=seed, pinwheels=args.pinwheels)
            for method in methods:
                t = time.perf_counter()
                r = place(lts, method=method, time_limit=args.time_limit)
                seconds = time.perf_counter() - t
                bound = 1 << 20  # the hidden packing's arena; r.lower_bound_bytes is the same peak of live bytes
                rows.append({"buffers": n, "seed": seed, "method": method, "arena_bytes": r.arena_bytes,
                             "bound_bytes": bound, "ratio": round(r.arena_bytes / bound, 4),
                             "seconds": round(seconds, 2), "status": r.status})
                print(f"{n} buffers, seed {seed}, {method}: arena/bound {r.arena_bytes / bound:.4f}, "
                      f"{seconds:.1f} s, {r.status}", flush=True)
    summary = {}
    for method in methods:
        mine = [row for row in rows if row["method"] == method]
        summary[method] = {"instances": len(mine), "closed": sum(row["ratio"] == 1 for row in mine),
                           "median_ratio": statistics.median(row["ratio"] for row in mine),
                           "max_ratio": max(row["ratio"] for row in mine)}
        s = summary[method]
        print(f"{method}: closed {s['closed']}/{s['instances']}, median arena/bound {s['median_ratio']:.4f}, "
              f"max {s['max_ratio']:.4f} (limit {args.time_limit:g} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"time_limit": args.time_limit, "rows": rows, "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
