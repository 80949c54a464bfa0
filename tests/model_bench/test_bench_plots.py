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
