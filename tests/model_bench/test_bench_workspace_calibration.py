"""Reading cuDNN's convolution workspaces off an eager step's allocator trace."""

from __future__ import annotations

from model_bench.workspace_calibration import conv_workspaces
from model_ir.graph import Buffer, Graph, Op

MiB = 1 << 20


def train_step() -> Graph:
    """conv1 -> relu -> conv2 -> sum, then conv2's and conv1's backward, shapes as a
    capture records them."""
    def buf(name, shape, mib, **kw):
        return Buffer(name, mib * MiB, shape=shape, dtype="float32", **kw)
    buffers = [buf("x", (1, 8, 2, 2), 4, persistent=True), buf("w1", (16, 8, 3, 3), 3, persistent=True),
               buf("y1", (1, 16, 2, 2), 8), buf("r", (1, 16, 2, 2), 8), buf("w2", (24, 16, 1, 1), 5, persistent=True),
               buf("y2", (1, 24, 2, 2), 12), Buffer("workspace:conv2", 3 * MiB, kind="workspace"),
               Buffer("loss", 512, output=True), buf("dy2", (1, 24, 2, 2), 12),
               buf("dr", (1, 16, 2, 2), 8), buf("dw2", (24, 16, 1, 1), 5), buf("dw1", (16, 8, 3, 3), 3)]
    conv, back = "aten.convolution.default", "aten.convolution_backward.default"
    forward, backward = {"phase": "forward"}, {"phase": "backward"}
    ops = [Op("conv1", inputs=["x", "w1"], outputs=["y1"], target=conv, meta=forward),
           Op("relu", inputs=["y1"], outputs=["r"], target="aten.relu.default", meta=forward),
           Op("conv2", inputs=["r", "w2"], outputs=["y2", "workspace:conv2"], target=conv, meta=forward),
           Op("sum", inputs=["y2"], outputs=["loss"], target="aten.sum.default", meta=forward),
           Op("ones", inputs=["loss"], outputs=["dy2"], target="aten.ones_like.default", meta=backward),
           Op("conv2_bwd", inputs=["dy2", "r", "w2"], outputs=["dr", "dw2"], target=back, meta=backward),
           Op("conv1_bwd", inputs=["dr", "x", "w1"], outputs=["dw1"], target=back, meta=backward)]
    return Graph(buffers, ops)


def test_workspaces_are_the_allocations_freed_right_after_a_convolutions_outputs():
    g = train_step()
    trace = [
        ["alloc", 100, 8 * MiB],                 # y1
        ["alloc", 200, 5 * MiB + 17],            # conv1's workspace: freed at once
        ["free_requested", 200, 5 * MiB + 17], ["free_completed", 200, 5 * MiB + 17],
        ["alloc", 300, 8 * MiB],                 # r
        ["alloc", 350, 1000],                    # something the graph does not have: skipped
        ["alloc", 400, 12 * MiB],                # y2; conv2 took no workspace (the graph's is an estimate)
        ["alloc", 500, 512],                     # loss
        ["alloc", 600, 12 * MiB],                # dy2
        ["alloc", 700, 8 * MiB],                 # dr (conv2's input gradient), then its workspace
        ["alloc", 710, 2 * MiB], ["free_requested", 710, 2 * MiB],
        ["alloc", 720, 5 * MiB],                      # dw2, then its workspace
        ["alloc", 730, 7 * MiB], ["free_requested", 730, 7 * MiB],
        ["alloc", 800, 3 * MiB],                      # dw1 (conv1: no input gradient), no workspace
        ["alloc", 900, 1 << 30],                 # the optimizer: not read
    ]
    forward, backward = conv_workspaces(g, trace)
    sig1 = ((1, 8, 2, 2), (16, 8, 3, 3), (1, 16, 2, 2), "float32")
    sig2 = ((1, 16, 2, 2), (24, 16, 1, 1), (1, 24, 2, 2), "float32")
    assert forward == {sig1: 5 * MiB + 17, sig2: 0}
    assert backward == {sig2: (2 * MiB, 7 * MiB), sig1: (0, 0)}  # (input gradient's, weight gradient's)
