"""The issue's targets on real zoo models (AlexNet by default; the whole zoo is slow)."""

import resource

import pytest

from model_bench.pipeline import BenchSettings, run_bench
from model_bench.sweep import suite_models

GIB = 2**30


def test_alexnet_train_32_reproduces_model_and_reaches_the_proven_optimum():
    # MODeL counts no library workspaces: its figure is the CPU capture's (CUDA's adds cuDNN's).
    cpu = run_bench("alexnet", "train", 32, BenchSettings(time_limit=60, device="cpu")).figures
    f = run_bench("alexnet", "train", 32, BenchSettings(time_limit=60)).figures
    # MODeL's README: 0.5618 GB simulated for program order (within 2%).
    assert abs(cpu["eager_peak_bytes"] / GIB - 0.5618) <= 0.02 * 0.5618
    assert f["eager_peak_bytes"] > cpu["eager_peak_bytes"] and f["conv_workspace_bytes"] > 0
    # The best order: 0.3878 GiB, equal to the lower bound, hence optimal.
    assert round(f["optimized_peak_bytes"] / GIB, 4) == 0.3878
    assert f["schedule_optimal"] and f["lower_bound_bytes"] == f["optimized_peak_bytes"]
    assert f["fragmentation"] <= 0.01
    assert f["eager_reserved_bytes"] >= f["eager_peak_bytes"]
    assert f["seconds"] < 120


@pytest.mark.slow
@pytest.mark.parametrize("model", suite_models())
@pytest.mark.parametrize("batch", [1, 32])
def test_every_suite_model_trains_within_two_minutes_with_tight_placement(model, batch):
    f = run_bench(model, "train", batch, BenchSettings(time_limit=60)).figures
    assert f["seconds"] < 120
    assert f["fragmentation"] <= 0.01
    assert f["optimized_total_bytes"] <= f["eager_reserved_bytes"]
    assert f["lower_bound_bytes"] <= f["optimized_peak_bytes"] <= f["eager_peak_bytes"]


@pytest.mark.slow
def test_opt_1_3b_captures_without_real_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    f = run_bench("opt-1.3b", "train", 1, BenchSettings(time_limit=30)).figures
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert f["persistent_bytes"] > 4.9 * GIB  # the weights are accounted for...
    assert grown < 2 * GIB  # ...but never allocated


@pytest.mark.slow
@pytest.mark.parametrize("model", ["opt-13b", "opt-30b"])
def test_opt_adamw_orders_end_under_five_hundredths_of_a_percent(model):
    """Issue 15's goal on the AdamW steps that missed it before the tails (0.012% for
    13B after 66 s, 0.062% for 30B): under 0.05% of the bound within 60 s."""
    from model_bench.pipeline import capture_model
    from model_sched import schedule

    _, graph = capture_model(model, "train", 1, optimizer="adamw")
    r = schedule(graph, method="auto", time_limit=60)
    assert r.gap < 0.0005 and r.peak_bytes >= r.lower_bound_bytes
