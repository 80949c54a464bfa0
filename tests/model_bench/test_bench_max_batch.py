"""The batch-size search and memory sizes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_bench.errors import BenchError
from model_bench.max_batch import largest_fitting, parse_bytes
from model_bench.pipeline import BenchSettings


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


def test_measured_search_runs_each_probe_in_a_fresh_process_and_counts_failures_as_not_fitting(monkeypatch):
    """The plumbing of ``max-batch --measure`` (the child processes need a GPU; here they are faked:
    reserved memory grows 10 MiB per sample, and batches over 12 run out of memory)."""
    import model_runtime.measured_runs as measured_runs

    from model_bench.max_batch import max_batch

    MiB = 2**20
    specs = []

    def fake_spawn(spec, alloc, **_):
        specs.append((spec["variant"], alloc, spec["batch_size"]))
        if spec["batch_size"] > 12:
            return {"error": "torch.OutOfMemoryError: CUDA out of memory"}
        per_sample = {("eager", "default"): 10, ("eager", "expandable"): 8, ("auto", "expandable"): 5}
        return {"max_reserved_bytes": spec["batch_size"] * per_sample[spec["variant"], alloc] * MiB}

    monkeypatch.setattr(measured_runs, "spawn_variant", fake_spawn)
    r = max_batch("tiny-mlp", 60 * MiB, measure=True, limit=64)
    assert (r["eager_max_batch_size"], r["strongest_baseline_max_batch_size"], r["optimized_max_batch_size"]) == (6, 7, 12)
    assert r["eager_source"].startswith("measured") and "fresh process" in r["optimized_source"]
    assert {(v, a) for v, a, _ in specs} == {("eager", "default"), ("eager", "expandable"), ("auto", "expandable")}
    assert r["gain"] == 2.0 and r["gain_vs_strongest"] == 12 / 7
    assert r["plan_max_batch_size"] is None  # the plan's own figure is simulated only
    # --autocast bf16 reaches every child and the result
    seen = []
    monkeypatch.setattr(measured_runs, "spawn_variant", lambda spec, alloc, **_: seen.append(spec.get("autocast"))
                        or {"max_reserved_bytes": spec["batch_size"] * MiB})
    r = max_batch("tiny-mlp", 8 * MiB, measure=True, limit=16, settings=BenchSettings(autocast="bf16"))
    assert seen and set(seen) == {"bfloat16"} and r["autocast"] == "bfloat16"


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
