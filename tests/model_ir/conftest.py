import json

import pytest

from model_ir.testing.examples import diamond_json


@pytest.fixture
def diamond_file(tmp_path):
    """The format documentation's example graph, written to a file."""
    p = tmp_path / "diamond.json"
    p.write_text(json.dumps(diamond_json()))
    return p
