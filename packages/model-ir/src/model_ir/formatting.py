"""Human-readable figures for CLI output."""

from __future__ import annotations


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``'1.50 KiB (1536 B)'``; exact bytes are kept for scripts that grep."""
    value, unit = float(n), "B"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, u
    if unit == "B":
        return f"{int(n)} B"
    return f"{value:.2f} {unit} ({int(n)} B)"


def percent(part: float, whole: float) -> str:
    """Signed percentage change of ``part`` against ``whole``."""
    if not whole:
        return "n/a"
    return f"{100.0 * (part - whole) / whole:+.1f}%"
