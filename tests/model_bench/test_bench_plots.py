"""Plots are written as PNG files and draw what they are given."""

from model_bench.memory_snapshot import Allocation, Segment
from model_bench.plots import plot_layout, plot_live_bytes

PNG = b"\x89PNG\r\n\x1a\n"


def test_live_bytes_plot(tmp_path):
    p = plot_live_bytes(tmp_path / "live.png", {"eager": [10, 30, 20], "optimized": [10, 15, 20]},
                        title="t", levels={"lower bound": 20})
    data = p.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_layout_plot(tmp_path):
    allocs = [Allocation("w", 0, 1024, -1, 10), Allocation("a", 1024, 2048, 0, 4), Allocation("b", 1024, 512, 4, 9)]
    p = plot_layout(tmp_path / "layout.png", allocs, segments=[Segment(0, 4096)], steps=10, peak_bytes=3072,
                    title="layout")
    assert p.read_bytes().startswith(PNG)
    empty = plot_layout(tmp_path / "empty.png", [], steps=0, title="nothing")
    assert empty.read_bytes().startswith(PNG)


def _kept_figure(monkeypatch):
    """Keep the figure a plot function closes, to look at what it drew."""
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def test_equal_levels_stay_distinguishable_and_say_their_values(tmp_path, monkeypatch):
    kept = _kept_figure(monkeypatch)
    plot_live_bytes(tmp_path / "live.png", {"eager": [10, 30, 20]}, title="t",
                    levels={"plan memory": 2048, "lower bound": 2048})
    ax = kept[0].axes[0]
    plan, bound = ax.lines[1], ax.lines[2]  # after the eager step line
    assert plan.get_linestyle() != bound.get_linestyle() and plan.get_linewidth() > bound.get_linewidth()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "plan memory: 2.0 KiB" in labels and "lower bound: 2.0 KiB" in labels


def test_layout_plot_names_the_largest_buffers(tmp_path, monkeypatch):
    kept = _kept_figure(monkeypatch)
    allocs = [Allocation(f"b{i}", 100 * i, 100, 0, 1 + i) for i in range(12)]
    plot_layout(tmp_path / "layout.png", allocs, steps=12, title="layout")
    names = {t.get_text() for t in kept[0].axes[0].texts}
    assert names == {f"b{i}" for i in range(4, 12)}  # the 8 longest-lived of equal size
