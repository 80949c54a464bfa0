"""How closely ``place(..., time_limit=S)`` keeps its time limit on large, dense
random instances (issue 14: warm start, search set-up and validation included).

    uv run python packages/model-place/benchmarks/time_limits.py [--buffers 100000] [--limits 5,10,20]

Each instance: N buffers with random starts in [0, 2N), lengths in [1, 2000) and
sizes multiple of 512 bytes, seed 0. Prints, per limit, the wall-clock seconds of
the whole call, the ratio to the limit, the arena over the peak of live bytes and
the status, and writes them as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from model_ir import Lifetime
from model_place import place


def dense_instance(n: int, seed: int = 0) -> list[Lifetime]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = rng.randrange(0, 2 * n)
        out.append(Lifetime(f"b{i}", s, s + rng.randrange(1, 2000), 512 * rng.randrange(1, 64)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--buffers", type=int, default=100_000)
    p.add_argument("--limits", default="5,10,20", help="time limits in seconds")
    p.add_argument("--method", default="auto")
    p.add_argument("--out", help="write the rows as JSON to this file")
    args = p.parse_args(argv)
    lifetimes = dense_instance(args.buffers)
    rows = []
    for limit in (float(x) for x in args.limits.split(",")):
        t = time.perf_counter()
        r = place(lifetimes, method=args.method, time_limit=limit)
        seconds = time.perf_counter() - t
        rows.append({"buffers": args.buffers, "time_limit": limit, "seconds": round(seconds, 2),
                     "ratio": round(seconds / limit, 3), "arena_over_peak": round(r.arena_bytes / r.lower_bound_bytes, 4),
                     "status": r.status})
        print(f"{args.buffers} buffers, limit {limit:g} s: {seconds:.2f} s ({seconds / limit:.2f}x), "
              f"arena/peak {r.arena_bytes / r.lower_bound_bytes:.4f}, {r.status}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
