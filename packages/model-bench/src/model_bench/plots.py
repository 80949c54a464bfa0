"""Matplotlib plots of a benchmark run (Agg backend: files only, no display needed).

- :func:`plot_live_bytes`: live bytes at every step, eager order against the
  optimized order, with the lower bound and the reserved/arena totals as lines;
- :func:`plot_layout`: time x address, one rectangle per buffer, for a static
  placement or for the caching-allocator simulation, so fragmentation (the white
  space under the top of the arena) is visible at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from model_bench.memory_snapshot import Allocation, Segment  # noqa: E402

GIB = 1024**3


def _unit(max_bytes: float) -> tuple[float, str]:
    for scale, name in ((GIB, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if max_bytes >= scale:
            return scale, name
    return 1, "B"


def plot_live_bytes(path: str | Path, timelines: Mapping[str, Sequence[int]], *, title: str,
                    levels: Mapping[str, int] | None = None) -> Path:
    """Step plot of live bytes (persistent included) for each named timeline.

    Timelines may have different lengths only if their orders do (they do not for
    one graph). ``levels`` are drawn as horizontal lines (e.g. the lower bound), each
    in its own dash pattern and width, widest first, so that equal levels stay visible;
    the legend gives each value.
    """
    path = Path(path)
    peak = max([max(t, default=0) for t in timelines.values()] + list((levels or {}).values()) + [1])
    scale, unit = _unit(peak)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, timeline in timelines.items():
        ax.step(range(len(timeline)), [v / scale for v in timeline], where="post", label=name, linewidth=1)
    styles = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))
    items = list((levels or {}).items())
    for i, (name, value) in enumerate(items):
        ax.axhline(value / scale, linestyle=styles[i % len(styles)], linewidth=0.8 + 0.6 * (len(items) - 1 - i),
                   color=f"C{i + len(timelines)}", label=f"{name}: {value / scale:.1f} {unit}", zorder=2 + i)
    ax.set_xlabel("step (op index in the order)")
    ax.set_ylabel(f"live bytes ({unit})")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: How many of the largest buffers (bytes x steps) a layout plot names.
LABELLED_BUFFERS = 8


def plot_layout(path: str | Path, allocations: Sequence[Allocation], *, title: str, steps: int,
                segments: Sequence[Segment] = (), peak_bytes: int | None = None) -> Path:
    """Time x address plot, one rectangle per buffer, segments shaded in grey; the
    :data:`LABELLED_BUFFERS` largest rectangles are named.

    Addresses are drawn relative to the lowest segment (or allocation) address.
    Allocations with ``start < 0`` (persistent) are drawn from step 0 to the end.
    """
    path = Path(path)
    starts = [s.address for s in segments] + [a.address for a in allocations]
    base = min(starts, default=0)
    top = max([s.address + s.size for s in segments] + [a.address + a.size for a in allocations] + [base + 1])
    scale, unit = _unit(top - base)
    fig, ax = plt.subplots(figsize=(10, 5))
    for s in segments:
        ax.axhspan((s.address - base) / scale, (s.address + s.size - base) / scale, color="0.92", zorder=0)
        ax.axhline((s.address + s.size - base) / scale, color="0.6", linewidth=0.5, zorder=1)
    polys, colors = [], []
    for i, a in enumerate(allocations):
        x0, x1 = max(a.start, 0), min(max(a.end, a.start + 1), steps)
        y0, y1 = (a.address - base) / scale, (a.address + a.size - base) / scale
        polys.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        colors.append(f"C{i % 10}")
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="black", linewidths=0.1, zorder=2))
    areas = sorted(range(len(polys)), key=lambda i: -(polys[i][1][0] - polys[i][0][0]) * (polys[i][2][1] - polys[i][0][1]))
    for i in areas[:LABELLED_BUFFERS]:
        (x0, y0), (x1, _), (_, y1), _ = polys[i]
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, allocations[i].id, ha="center", va="center", fontsize=6,
                zorder=4, clip_on=True)
    if peak_bytes is not None:
        ax.axhline(peak_bytes / scale, color="red", linestyle="--", linewidth=0.8, label="peak live bytes", zorder=3)
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlim(0, max(steps, 1))
    ax.set_ylim(0, (top - base) / scale * 1.02)
    ax.set_xlabel("step (op index in the order)")
    ax.set_ylabel(f"address ({unit} from the first segment)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
