"""One intra-op thread for the runtime tests: results are bitwise the same either way,
and on a small shared machine it avoids oversubscription (several times faster)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
