"""How closely the captured program order models plain eager PyTorch (CPU, measured).

For each model: the peak live storage bytes measured while the eager training step
runs (``measure_eager_live_bytes``), and the simulated program-order peak of the
captured graph with gradients kept to the end (``keep_grads=True``, eager's ``.grad``)
and freed after the optimizer read them (the default, what a plan does), and eager's
simulation of the default capture (``simulate(graph, eager=True)``: the eager baselines,
which hold each gradient to the end of the step). Granularity 1 byte. Run:

    uv run python packages/model-ir/benchmarks/eager_fidelity.py
"""

from __future__ import annotations

import torch
from model_ir import simulate
from model_ir.testing.live_memory import measure_eager_live_bytes
from model_ir.testing.torch_models import TransformerBlock, mlp, small_cnn
from model_ir.torch import capture


def _models():
    yield "mlp(256, 4) batch 64", lambda: mlp(256, 4), torch.randn(64, 256)
    yield "small_cnn batch 8x3x16x16", small_cnn, torch.randn(8, 3, 16, 16)
    yield "transformer block 64/4 batch 4x32", lambda: TransformerBlock(64, 4, dropout=0.0), torch.randn(4, 32, 64)
    try:
        import torchvision
    except ImportError:
        return
    yield "resnet18 batch 4x3x64x64", lambda: torchvision.models.resnet18(num_classes=10), torch.randn(4, 3, 64, 64)


def main() -> None:
    print("| model (Adam) | eager measured peak | simulated, keep_grads | simulated, default | eager simulation |")
    print("|---|---|---|---|---|")
    for name, make, x in _models():
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        kept = simulate(capture(model, x, optimizer=opt, granularity=1, keep_grads=True)).peak_bytes
        default = capture(model, x, optimizer=opt, granularity=1)
        freed, held = simulate(default).peak_bytes, simulate(default, eager=True).peak_bytes
        eager = max(measure_eager_live_bytes(model, opt, x))
        print(f"| {name} | {eager} | {kept} ({(kept - eager) / eager:+.3%}) | {freed} ({(freed - eager) / eager:+.2%}) "
              f"| {held} ({(held - eager) / eager:+.3%}) |")


if __name__ == "__main__":
    main()
