"""Sweeps: every (model, mode, batch size) combination, one report.

A run that fails (a model the capture cannot trace, a solver error) is recorded
with its error message and the sweep goes on; the report shows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_bench.pipeline import BenchRun, BenchSettings, run_bench
from model_bench.progress import Progress
from model_bench.reports import write_reports
from model_bench.zoo import check_batch_size, check_mode, get_model, model_names
from model_ir.cli_values import AUTOCAST
from model_ir.errors import ModelOptError

SUITE_MODES = ("train", "eval")
SUITE_BATCH_SIZES = (1, 32)


def check_sweep(models: Sequence[str], modes: Sequence[str], batch_sizes: Sequence[int]) -> None:
    """Check every name, mode and batch size before spending minutes on the first run."""
    if not models or not modes or not batch_sizes:
        from model_bench.errors import BenchError

        raise BenchError("a sweep needs at least one model, one mode and one batch size")
    for m in models:
        get_model(m)
    for mode in modes:
        check_mode(mode)
    for b in batch_sizes:
        check_batch_size(b)


def suite_models() -> list[str]:
    """The models ``bench suite`` runs by default (the zoo minus test-only and huge ones)."""
    return model_names(suite_only=True)


#: The zoo models the GPU benchmarks measure (model-runtime's ``benchmarks/gpu_*.py``,
#: ``scripts/eager_on_gpu.py``): the suite's vision and language models up to GPT-2's
#: size, without the OPT family and the test-sized transformer-small.
MEASURED_MODELS = ("alexnet", "vgg16", "resnet18", "mobilenet_v2", "vit_b_16", "bert-base", "gpt2",
                   "efficientnet_b0", "googlenet", "inception_v3", "mnasnet0_5", "r3d_18", "resnet50",
                   "squeezenet1_0", "transformer", "vgg11", "vgg19")


def measure_run(model: str, mode: str, batch: int, settings: BenchSettings, progress: Progress) -> dict[str, Any]:
    """The measured figures of one zoo run on the GPU (each variant in a fresh process)."""
    from model_runtime.measured_runs import measure_model, measured_figures

    result = measure_model(model, mode=mode, batch_size=batch, optimizer=settings.optimizer, device="cuda",
                           time_limit=settings.time_limit, progress=progress.say,
                           memory_budget=settings.memory_budget,
                           autocast=AUTOCAST[settings.autocast] if settings.autocast else None)
    return measured_figures(result)


def run_sweep(models: Sequence[str], modes: Sequence[str], batch_sizes: Sequence[int],
              settings: BenchSettings = BenchSettings(), *, out_dir: str | Path | None = None,
              artifacts: bool = True, progress: Progress | None = None,
              on_run: Callable[[dict[str, Any], BenchRun | None], None] | None = None,
              title: str = "model-opt bench", measure: bool = False) -> list[dict[str, Any]]:
    """Run every combination; returns the figures of each run (``error`` set for failures).

    ``measure`` (CUDA): also run the eager, ``reorder`` and ``arena`` steps for real,
    each in a fresh process with the default allocator and with expandable segments,
    and add the measured figures (:func:`model_runtime.measured_runs.measured_figures`).

    With ``out_dir``, each run's files go to ``out_dir/<model>-<mode>-b<batch>/`` and the
    report (results JSON/CSV, summary and table Markdown) to ``out_dir``, rewritten
    after every run so an interrupted sweep keeps what it measured.
    """
    from model_bench.artifacts import run_label, write_artifacts  # matplotlib: only when writing

    progress = progress or Progress(quiet=True)
    check_sweep(models, modes, batch_sizes)
    combos = list(itertools.product(models, modes, batch_sizes))
    results: list[dict[str, Any]] = []
    for k, (model, mode, batch) in enumerate(combos, 1):
        progress.prefix = f"[{k}/{len(combos)} {model} {mode} b{batch}] " if len(combos) > 1 else f"[{model}] "
        run: BenchRun | None = None
        try:
            run = run_bench(model, mode, batch, settings, progress=progress)
            figures = dict(run.figures)
            if measure:
                figures.update(measure_run(model, mode, batch, settings, progress))
            if out_dir is not None and artifacts:
                write_artifacts(run, Path(out_dir) / run_label(figures))
        except Exception as e:  # noqa: BLE001 - one model's failure must not lose the sweep
            if len(combos) == 1:
                raise
            message = str(e) if isinstance(e, ModelOptError) else f"{type(e).__name__}: {e}"
            figures = {"model": model, "mode": mode, "batch_size": batch, "optimizer": settings.optimizer,
                       **({"autocast": AUTOCAST[settings.autocast]} if settings.autocast else {}), "error": message}
            e = message
            progress.say(f"failed: {e}")
        results.append(figures)
        if on_run is not None:
            on_run(figures, run)
        if out_dir is not None:
            write_reports(results, out_dir, title=title)
        if figures.get("schedule_interrupted"):
            # Ctrl-C reached a solver (which keeps its best answer instead of raising): the
            # sweep stops here, with the reports of the runs so far written.
            raise KeyboardInterrupt
    progress.prefix = ""
    return results
