"""Capture time and peak RSS for a ~1B-parameter decoder-only transformer (fake tensors).

The model is built under ``FakeTensorMode`` (no parameter memory), the batch is given
as ``TensorSpec``s, and one full AdamW training step is captured. Run:

    uv run python packages/model-ir/benchmarks/capture_1b.py

Prints one ``key: value`` line per figure. Peak RSS is the process's maximum resident
set size (``getrusage``), so it includes the Python interpreter and torch itself.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import torch
from model_ir import simulate
from model_ir.formatting import human_bytes
from model_ir.testing.torch_models import DecoderLM, lm_loss
from model_ir.torch import TensorSpec, capture
from torch._subclasses.fake_tensor import FakeTensorMode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with FakeTensorMode():
        model = DecoderLM(args.vocab, args.dim, args.layers, args.heads, context=args.seq)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())

    t0 = time.perf_counter()
    graph = capture(
        model, TensorSpec((args.batch, args.seq), torch.long), targets=(TensorSpec((args.batch, args.seq), torch.long),),
        loss_fn=lm_loss, optimizer=optimizer,
    )
    capture_s = time.perf_counter() - t0
    profile = simulate(graph)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    print(f"parameters: {n_params}")
    print(f"model: layers={args.layers} dim={args.dim} heads={args.heads} vocab={args.vocab} "
          f"batch={args.batch} seq={args.seq} (AdamW, fp32)")
    print(f"ops: {len(graph.ops)}  buffers: {len(graph.buffers)}")
    print(f"build_seconds: {build_s:.2f}")
    print(f"capture_seconds: {capture_s:.2f}")
    print(f"peak_rss_bytes: {rss_peak}  ({human_bytes(rss_peak)}; at start {human_bytes(rss_start)})")
    print(f"simulated_peak_bytes: {profile.peak_bytes}  ({human_bytes(profile.peak_bytes)}, program order)")
    print(f"persistent_bytes: {graph.persistent_bytes}  ({human_bytes(graph.persistent_bytes)})")


if __name__ == "__main__":
    main()
