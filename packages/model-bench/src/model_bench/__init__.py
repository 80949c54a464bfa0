"""model_bench: the model zoo, the benchmark pipeline, reports, plots and snapshots.

Names are imported lazily: the plugin manager imports this package for every
``model-opt`` command, which must not pay for torch or matplotlib.
"""

from __future__ import annotations

from model_ir.lazy_exports import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "BenchError": "model_bench.errors",
    "BenchRun": "model_bench.pipeline",
    "BenchSettings": "model_bench.pipeline",
    "ModelCase": "model_bench.zoo",
    "analyze_graph": "model_bench.pipeline",
    "build_case": "model_bench.zoo",
    "capture_model": "model_bench.pipeline",
    "max_batch": "model_bench.max_batch",
    "model_names": "model_bench.zoo",
    "plan_snapshot": "model_bench.memory_snapshot",
    "run_bench": "model_bench.pipeline",
    "run_sweep": "model_bench.sweep",
    "write_artifacts": "model_bench.artifacts",
    "write_reports": "model_bench.reports",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
