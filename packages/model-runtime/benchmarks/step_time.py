"""Step time of eager PyTorch vs the ``reorder`` and ``arena`` executors, in one run.

Each model is built three times from the same seed (eager, reorder, arena: each has
its own parameters and optimizer); after warm-up, every round runs one step of each
variant in turn (interleaved, so that load on a shared machine hits all three
alike) and the median step time of each is reported with its ratio to eager, and the
ratio of the fastest steps (less sensitive to interference from other processes).

    uv run python packages/model-runtime/benchmarks/step_time.py
    uv run python packages/model-runtime/benchmarks/step_time.py --models resnet18 --rounds 30 --threads 1
    uv run python packages/model-runtime/benchmarks/step_time.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from torch import nn

from model_ir.testing.torch_models import TransformerBlock, eager_step, mlp, small_cnn
from model_runtime import optimize


def _labels(classes: int, batch: int):
    return lambda: (torch.arange(batch) % classes,)


def _resnet18():
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


#: name -> (model factory, optimizer factory, batch factory, targets factory); with
#: targets the loss is cross-entropy, without it the sum of the outputs.
MODELS = {
    "mlp": (lambda: mlp(512, 4), lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
            lambda: torch.randn(128, 512), None),
    "cnn": (lambda: small_cnn(32), lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
            lambda: torch.randn(32, 3, 16, 16), _labels(10, 32)),
    "transformer": (lambda: TransformerBlock(128, 4, dropout=0.1),
                    lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3), lambda: torch.randn(8, 64, 128), None),
    "resnet18": (_resnet18, lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
                 lambda: torch.randn(8, 3, 64, 64), _labels(10, 8)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(name: str, *, rounds: int, warmup: int, device: torch.device, time_limit: float) -> dict:
    make_model, make_opt, make_batch, make_targets = MODELS[name]
    torch.manual_seed(0)
    base = make_model().to(device)
    loss_fn = nn.functional.cross_entropy if make_targets else None
    targets = tuple(t.to(device) for t in make_targets()) if make_targets else ()
    x = make_batch().to(device)
    runs = {}
    models = {}
    for variant in ("eager", "reorder", "arena"):
        model = copy.deepcopy(base)
        opt = make_opt(model)
        models[variant] = (model, opt)
        if variant == "eager":
            runs[variant] = lambda model=model, opt=opt: eager_step(model, opt, x, loss_fn, targets)
        else:
            step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=targets, executor=variant,
                            time_limit=time_limit)
            runs[variant] = lambda step=step: step(x, targets=targets)
            if variant == "arena":
                arena_step = step
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for k in names[r % 3:] + names[:r % 3]:  # rotate who goes first
            _sync(device)
            t0 = time.perf_counter()
            runs[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    f = arena_step.figures()
    return {
        "model": name, "device": str(device), "rounds": rounds, "threads": torch.get_num_threads(),
        "median_seconds": med, "ratio_to_eager": {k: med[k] / med["eager"] for k in med},
        "min_seconds": best, "min_ratio_to_eager": {k: best[k] / best["eager"] for k in best},
        "ops": f["ops"], "fallback_ops": f["fallback_ops"], "out_variant_ops": f["out_variant_ops"],
        "fallback_bytes": f["fallback_bytes"],
        "memory": {k: f[k] for k in ("persistent_bytes", "eager_peak_bytes", "peak_bytes", "lower_bound_bytes",
                                      "eager_caching_allocator_bytes", "arena_bytes")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds per solver in optimize()")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not args.json:
        print(f"{'model':<12} {'ops':>5} {'fallbk':>6} {'eager ms':>9} {'reorder ms':>10} {'arena ms':>9} "
              f"{'reorder/eager':>13} {'arena/eager':>11}  (min: reorder/eager arena/eager)")
    memory_rows = []
    for name in args.models:
        r = bench_model(name, rounds=args.rounds, warmup=args.warmup, device=device, time_limit=args.time_limit)
        if args.json:
            print(json.dumps(r))
        else:
            m, q, b = r["median_seconds"], r["ratio_to_eager"], r["min_ratio_to_eager"]
            print(f"{name:<12} {r['ops']:>5} {r['fallback_ops']:>6} {1e3 * m['eager']:>9.2f} "
                  f"{1e3 * m['reorder']:>10.2f} {1e3 * m['arena']:>9.2f} {q['reorder']:>13.3f} {q['arena']:>11.3f}"
                  f"  ({b['reorder']:.3f} {b['arena']:.3f})")
        sys.stdout.flush()
        memory_rows.append((name, r["memory"]))
    if not args.json:
        print("\nmemory of the plans (MiB; peaks include the persistent bytes, arena and caching allocator "
              "are transient only)")
        print(f"{'model':<12} {'persistent':>10} {'eager peak':>10} {'planned':>8} {'bound':>8} "
              f"{'caching alloc':>13} {'arena':>8}")
        for name, m in memory_rows:
            mib = {k: v / 2**20 for k, v in m.items()}
            print(f"{name:<12} {mib['persistent_bytes']:>10.2f} {mib['eager_peak_bytes']:>10.2f} "
                  f"{mib['peak_bytes']:>8.2f} {mib['lower_bound_bytes']:>8.2f} "
                  f"{mib['eager_caching_allocator_bytes']:>13.2f} {mib['arena_bytes']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
