import pytest

from model_ir import Buffer, Graph, Op


@pytest.fixture
def training_graph() -> Graph:
    """A hand-made training step: two layers, a loss, gradients and in-place updates.

    Program order runs the updates last, so the small layer's gradient is still alive
    when the large layer's gradient is computed; sizes are multiples of 512 like a
    captured graph's.
    """
    k = 512
    buffers = [
        Buffer("x", 4 * k, kind="input", persistent=True),
        Buffer("w1", 24 * k, kind="parameter", persistent=True),
        Buffer("w2", 2 * k, kind="parameter", persistent=True),
        Buffer("a1", 16 * k, kind="activation"),
        Buffer("a2", 6 * k, kind="activation"),
        Buffer("loss", k, kind="output", output=True),
        Buffer("g_a2", 6 * k, kind="gradient"),
        Buffer("g_w2", 2 * k, kind="gradient"),
        Buffer("g_a1", 16 * k, kind="gradient"),
        Buffer("g_w1", 24 * k, kind="gradient"),
    ]
    ops = [
        Op("fc1", inputs=["x", "w1"], outputs=["a1"], target="aten.mm.default"),
        Op("fc2", inputs=["a1", "w2"], outputs=["a2"], target="aten.mm.default"),
        Op("loss", inputs=["a2"], outputs=["loss"]),
        Op("loss_bw", inputs=["loss", "a2"], outputs=["g_a2"], meta={"phase": "backward"}),
        Op("fc2_bw_w", inputs=["g_a2", "a1"], outputs=["g_w2"], target="aten.mm.default", meta={"phase": "backward"}),
        Op("fc2_bw_x", inputs=["g_a2", "w2"], outputs=["g_a1"], target="aten.mm.default", meta={"phase": "backward"}),
        Op("fc1_bw_w", inputs=["g_a1", "x"], outputs=["g_w1"], target="aten.mm.default", meta={"phase": "backward"}),
        Op("sgd_w2", inputs=["g_w2"], mutates=["w2"], target="aten.add_.Tensor", meta={"phase": "optimizer"}),
        Op("sgd_w1", inputs=["g_w1"], mutates=["w1"], target="aten.add_.Tensor", meta={"phase": "optimizer"}),
    ]
    return Graph(buffers, ops, name="two-layer")
