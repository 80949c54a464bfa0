"""A standard PyTorch training loop with an optimized step (model_runtime.optimize).

Run: uv run python examples/training_loop.py [--epochs 2] [--device cpu|cuda] [--amp bf16|fp16]

A DataLoader with a short last batch, a learning-rate schedule stepped every batch,
autocast (bf16; or fp16 with a GradScaler's dynamic loss scaling), gradient clipping
whose norm is logged, an evaluation pass after every epoch: the optimized step replaces
``zero_grad / forward / loss / backward / step`` and plans one step per batch shape
and mode on first use.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from model_runtime import optimize
from model_runtime.optimized_step import ReplanWarning


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=("bf16", "fp16"), default="bf16")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)

    data = TensorDataset(torch.randn(200, 3, 32, 32), torch.randint(0, 10, (200,)))
    loader = DataLoader(data, batch_size=32, shuffle=True)  # 6 batches of 32, then one of 8
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=args.epochs * len(loader))

    # fp16 needs loss scaling: the step scales, unscales, skips updates with inf/NaN
    # gradients and updates the scale, as scaler.scale/step/update do in eager.
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
    x, y = next(iter(loader))
    # Clipping runs between backward and the update; the norm it returns is the step's
    # before_step_result after each call.
    clip = lambda params: nn.utils.clip_grad_norm_(params.values(), max_norm=1.0)  # noqa: E731
    step = optimize(model, x.to(device), optimizer=optimizer, loss_fn=nn.functional.cross_entropy,
                    targets=(y.to(device),), autocast=torch.float16 if scaler else torch.bfloat16, scaler=scaler,
                    before_step=clip)
    print(step.report())

    warnings.simplefilter("ignore", ReplanWarning)  # the short last batch and eval get plans of their own
    accuracy = 0.0
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = step(x.to(device), targets=(y.to(device),))  # forward, loss, backward, update
            scheduler.step()
        model.eval()
        correct = 0
        for x, y in loader:
            logits = step(x.to(device))  # the model is in eval mode: the forward pass alone
            correct += int((logits.argmax(1).cpu() == y).sum())
        accuracy = correct / len(data)
        print(f"epoch {epoch}: last loss {float(loss):.4f}, gradient norm {float(step.before_step_result):.3f}, "
              f"lr {scheduler.get_last_lr()[0]:.2e}, accuracy {accuracy:.2%}, {len(step.plans)} plans")
    return accuracy


if __name__ == "__main__":
    main()
