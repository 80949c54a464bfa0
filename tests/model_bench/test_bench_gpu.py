"""The simulation against the GPU (``uv run pytest -m gpu tests/model_bench``): the issue's
acceptance, simulated eager figures within 5% of ``torch.cuda`` for both allocator settings.

Each case runs ``bench --measure`` (eager, reorder and arena in fresh processes) and
compares the simulated eager peak and reserved bytes with the measured ones.
"""

import pytest

CASES = [("alexnet", 32), ("resnet18", 32), ("vit_b_16", 1), ("bert-base", 1), ("gpt2", 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("model,batch", CASES)
def test_simulated_eager_memory_is_within_5_percent_of_the_measured(model, batch):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from model_bench.pipeline import BenchSettings
    from model_bench.sweep import run_sweep

    (f,) = run_sweep([model], ["train"], [batch], BenchSettings(time_limit=30), measure=True)
    pairs = {
        "allocated": (f["eager_allocated_peak_bytes"], f["measured_eager_allocated_bytes"]),
        "reserved (default)": (f["eager_reserved_bytes"], f["measured_eager_reserved_bytes"]),
        "reserved (expandable segments)": (f["eager_reserved_expandable_bytes"],
                                           f["measured_eager_reserved_expandable_bytes"]),
    }
    errors = {k: sim / real - 1 for k, (sim, real) in pairs.items()}
    assert all(abs(e) <= 0.05 for e in errors.values()), errors
