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


def share_of(part: float, whole: float, what: str) -> str:
    """``part`` as a share of ``whole``: ``'1.1% of the eager peak'`` (a saving stated as
    the positive amount it is, where a signed change read as memory going up)."""
    if not whole:
        return f"n/a (no {what})"
    return f"{100.0 * part / whole:.1f}% of the {what}"
