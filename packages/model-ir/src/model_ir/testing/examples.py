"""Small example graphs for tests and documentation."""

from __future__ import annotations

import copy
from typing import Any

_DIAMOND: dict[str, Any] = {
    "format": "model-ir/1", "name": "diamond",
    "buffers": [{"id": "t1", "size": 10}, {"id": "w", "size": 123, "persistent": True},
                {"id": "loss", "size": 4, "output": True}],
    "ops": [{"id": "A", "inputs": [], "outputs": ["t1"]},
            {"id": "B", "inputs": ["t1", "w"], "outputs": ["loss"], "mutates": [], "after": []}],
}


def diamond_json() -> dict[str, Any]:
    """The ``model-ir/1`` example of the format documentation (a fresh copy; peak 137 bytes)."""
    return copy.deepcopy(_DIAMOND)
