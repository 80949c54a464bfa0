"""GPU check: eager vs the ``reorder`` and ``arena`` executors on CUDA, for a few models.

For every model and variant (each from a fresh process state: models freed, cache
emptied) it reports ``torch.cuda.max_memory_allocated()`` and
``torch.cuda.max_memory_reserved()`` over the timed steps (after warm-up; the
parameters, optimizer state and, for ``arena``, the arena are allocated before and
included), the median step time, and the largest parameter difference from eager
after the same steps (CUDA kernels such as convolution backward are not bitwise
deterministic, so this is reported, not asserted).

Without a CUDA GPU it prints why and exits 0, so CI can run it anywhere.

    uv run python packages/model-runtime/scripts/gpu_check.py
    uv run python packages/model-runtime/scripts/gpu_check.py --models resnet18 --steps 20 --json
    uv run python packages/model-runtime/scripts/gpu_check.py --allow-cpu --models mlp --steps 2   # dry run
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time

import torch
from torch import nn

from model_ir.testing.torch_models import TransformerBlock, eager_step, mlp, small_cnn
from model_runtime import optimize


def _resnet18():
    import torchvision

    return torchvision.models.resnet18(num_classes=100)


#: name -> (model factory, optimizer factory, batch shape, classes or None: sum-of-outputs loss)
MODELS = {
    "mlp": (lambda: mlp(2048, 6), lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), (512, 2048), None),
    "cnn": (lambda: small_cnn(64), lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), (256, 3, 16, 16), 10),
    "transformer": (lambda: TransformerBlock(512, 8, dropout=0.1), lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4),
                    (16, 256, 512), None),
    "resnet18": (_resnet18, lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), (64, 3, 128, 128), 100),
}
VARIANTS = ("eager", "reorder", "arena")


def _fresh(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_variant(name: str, variant: str, *, steps: int, warmup: int, device: torch.device, time_limit: float):
    make_model, make_opt, shape, classes = MODELS[name]
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = make_opt(model)
    x = torch.randn(*shape, device=device)
    loss_fn = nn.functional.cross_entropy if classes else None
    targets = (torch.arange(shape[0], device=device) % classes,) if classes else ()
    figures = {}
    if variant == "eager":
        def run():
            return eager_step(model, opt, x, loss_fn, targets)
    else:
        step = optimize(model, x, optimizer=opt, loss_fn=loss_fn, targets=targets, executor=variant,
                        time_limit=time_limit)
        figures = step.figures()

        def run():
            return step(x, targets=targets)
    torch.manual_seed(1)
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result = {
        "model": name, "variant": variant, "median_step_seconds": statistics.median(times), "loss": float(loss),
        "max_memory_allocated": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        "max_memory_reserved": torch.cuda.max_memory_reserved() if device.type == "cuda" else None,
        "planned_peak_bytes": figures.get("peak_bytes"), "arena_bytes": figures.get("arena_bytes"),
        "fallback_ops": figures.get("fallback_ops"),
    }
    params = [p.detach().cpu() for p in model.parameters()]
    del model, opt, x, run
    if variant != "eager":
        del step
    _fresh(device)
    return result, params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "transformer", "resnet18"], choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per solver in optimize()")
    parser.add_argument("--json", action="store_true", help="one JSON object per model and variant")
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run on CPU (no memory figures)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print("gpu_check: no CUDA GPU available (torch.cuda.is_available() is False); skipping")
            return 0
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
        print(f"gpu_check: {torch.cuda.get_device_name()} torch {torch.__version__}", file=sys.stderr)

    def mib(v):
        return "n/a" if v is None else f"{v / 2**20:.1f}"

    if not args.json:
        print(f"{'model':<12} {'variant':<8} {'alloc MiB':>10} {'reserved MiB':>12} {'planned MiB':>11} "
              f"{'step ms':>8} {'x eager':>7} {'max |dp|':>9}")
    for name in args.models:
        ref_params, eager_time = None, None
        for variant in VARIANTS:
            r, params = run_variant(name, variant, steps=args.steps, warmup=args.warmup, device=device,
                                    time_limit=args.time_limit)
            if variant == "eager":
                ref_params, eager_time = params, r["median_step_seconds"]
            r["max_param_diff_vs_eager"] = max(float((a - b).abs().max()) for a, b in zip(params, ref_params))
            r["time_ratio_vs_eager"] = r["median_step_seconds"] / eager_time
            if args.json:
                print(json.dumps(r))
            else:
                planned = None if r["planned_peak_bytes"] is None else r["planned_peak_bytes"]
                print(f"{name:<12} {variant:<8} {mib(r['max_memory_allocated']):>10} {mib(r['max_memory_reserved']):>12} "
                      f"{mib(planned):>11} {1e3 * r['median_step_seconds']:>8.2f} {r['time_ratio_vs_eager']:>7.3f} "
                      f"{r['max_param_diff_vs_eager']:>9.2e}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
