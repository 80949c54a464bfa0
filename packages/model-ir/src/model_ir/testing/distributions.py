"""Installed-looking distributions for plugin tests, without installing anything.

:func:`write_distribution` writes modules and a ``.dist-info`` folder under a
directory; with that directory on ``sys.path`` (or ``PYTHONPATH``)
``importlib.metadata`` lists it like any installed distribution, so its entry points
go through model-opt's real plugin loading.
"""

from __future__ import annotations

from pathlib import Path


def write_distribution(root: Path, name: str, entry_points: dict[str, str],
                       modules: dict[str, str] | None = None, version: str = "0.1.0") -> Path:
    """Write distribution ``name`` under ``root``: ``entry_points`` (name -> ``module``
    or ``module:attribute``) in the ``model_opt`` group, and ``modules`` (dotted name
    -> source). Returns ``root``."""
    for module, source in (modules or {}).items():
        path = root.joinpath(*module.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[model_opt]\n{lines}", encoding="utf-8")
    return root
