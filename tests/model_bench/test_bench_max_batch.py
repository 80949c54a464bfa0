"""The batch-size search and memory sizes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_bench.errors import BenchError
from model_bench.max_batch import largest_fitting, parse_bytes


@given(st.integers(0, 300), st.integers(1, 300))
def test_largest_fitting_matches_brute_force(threshold, limit):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= threshold

    assert largest_fitting(fits, limit=limit) == min(threshold, limit)
    assert all(1 <= b <= limit for b in calls)
    assert len(calls) <= 2 * (limit.bit_length() + 1)


@pytest.mark.parametrize("text,value", [("16GiB", 16 * 2**30), ("16 GB", 16 * 10**9), ("500MiB", 500 * 2**20),
                                        ("1.5KiB", 1536), ("1024", 1024), ("2tib", 2 * 2**40)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["lots", "16 GiBs", "-1GiB", "0", ""])
def test_parse_bytes_rejects(text):
    with pytest.raises(BenchError):
        parse_bytes(text)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_real_steps_eager_and_planned_run_on_cpu(mode):
    """The code path max-batch measures on a GPU, run on the CPU (no memory figure there)."""
    import torch

    from model_bench.max_batch import run_real_step
    from model_bench.pipeline import BenchSettings
    from model_bench.zoo import build_case

    eager = run_real_step(build_case("tiny-cnn", mode, 3, device="cpu"))
    planned = run_real_step(build_case("tiny-cnn", mode, 3, device="cpu"), BenchSettings(time_limit=5),
                            optimized=True)
    # Same seed, same weights, same batch: the planned step computes what eager does.
    if mode == "train":
        assert torch.allclose(eager, planned)
    else:
        assert torch.allclose(eager, planned if torch.is_tensor(planned) else planned[0])


@pytest.mark.gpu
def test_measurement_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from model_bench.max_batch import measure_cuda

    eager = measure_cuda("resnet18", "train", 8)
    planned = measure_cuda("resnet18", "train", 8, optimized=True)
    assert eager is not None and eager > 45 * 2**20
    assert planned is not None and planned > 45 * 2**20
