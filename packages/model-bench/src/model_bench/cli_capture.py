"""``model-opt capture``: write a zoo model's training (or eval) step as a graph JSON file."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_ir.cli_values import AUTOCAST, whole_number
from model_ir.output_files import check_output
from model_bench.optimizers import OPTIMIZERS
from model_bench.pipeline import DEVICES
from model_bench.progress import Progress


class CaptureCommand:
    name = "capture"
    help = "capture a zoo model's step (forward, loss, backward, optimizer) as a model-ir/1 graph JSON file"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, metavar="NAME", help="zoo model (model-opt bench --list)")
        parser.add_argument("--mode", default="train", help="train (default) or eval")
        parser.add_argument("--batch-size", type=whole_number(1), default=1, metavar="B", help="batch size (default 1)")
        parser.add_argument("--optimizer", default=None, help=f"{', '.join(OPTIMIZERS)} (default sgd; train only)")
        parser.add_argument("--granularity", type=whole_number(1), default=512, metavar="BYTES",
                            help="round storage sizes up to this allocation granularity (default 512, CUDA's)")
        parser.add_argument("--device", default="cuda", choices=DEVICES,
                            help="the device whose kernels the graph records (default cuda, emulated without a GPU)")
        parser.add_argument("--autocast", default=None, choices=tuple(AUTOCAST),
                            help="mixed precision: the forward pass and the loss under torch.autocast with this dtype")
        parser.add_argument("--recomputable", action="store_true",
                            help="the forward pass made recomputable (in-place activations functional, dropout "
                                 "masks kept), as bench --budget and optimize(memory_budget=) capture it: the graph "
                                 "for schedule --budget")
        parser.add_argument("-o", "--output", required=True, metavar="FILE", help="graph JSON file to write")
        parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
        parser.add_argument("--quiet", action="store_true", help="no progress on stderr")

    def run(self, args) -> int:
        from model_bench.pipeline import capture_model
        from model_ir import save_graph, simulate
        from model_ir.formatting import human_bytes

        from model_bench.optimizers import check_optimizer, optimizer_for_mode
        from model_bench.zoo import check_batch_size, check_mode, get_model

        get_model(args.model)
        check_mode(args.mode)
        check_batch_size(args.batch_size)
        args.optimizer = optimizer_for_mode(args.optimizer, args.mode)
        check_optimizer(args.optimizer)
        check_output(args.output, force=args.force, flag="-o")  # before a capture of minutes
        out = Path(args.output)
        progress = Progress(quiet=args.quiet, prefix=f"[{args.model}] ")
        _, graph = capture_model(args.model, args.mode, args.batch_size, optimizer=args.optimizer,
                                 granularity=args.granularity, device=args.device, progress=progress, seconds={},
                                 autocast=args.autocast, for_recompute=args.recomputable)
        save_graph(graph, out, overwrite=args.force)
        peak = simulate(graph).peak_bytes
        print(f"wrote {out}: {len(graph.ops)} ops, {len(graph.buffers)} buffers, "
              f"program-order peak {human_bytes(peak)}")
        return 0
