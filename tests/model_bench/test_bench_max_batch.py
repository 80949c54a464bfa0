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


@pytest.mark.gpu
def test_eager_measurement_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from model_bench.max_batch import measure_eager_cuda

    reserved = measure_eager_cuda("resnet18", "train", 8, "sgd")
    assert reserved is not None and reserved > 45 * 2**20
