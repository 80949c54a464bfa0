"""Reading cuDNN's forward-convolution workspaces off an eager step's allocator trace."""

from __future__ import annotations

from model_bench.workspace_calibration import forward_conv_workspaces
from model_ir.graph import Buffer, Graph, Op

MiB = 1 << 20


def forward_step() -> Graph:
    """conv1 -> relu -> conv2 -> sum -> (backward op), shapes as a capture records them."""
    def buf(name, shape, **kw):
        return Buffer(name, 4 * MiB * shape[1] // 8, shape=shape, dtype="float32", **kw)
    buffers = [buf("x", (1, 8, 2, 2), persistent=True), buf("w1", (16, 8, 3, 3), persistent=True),
               buf("y1", (1, 16, 2, 2)), buf("r", (1, 16, 2, 2)), buf("w2", (24, 16, 1, 1), persistent=True),
               buf("y2", (1, 24, 2, 2)), Buffer("workspace:conv2", 3 * MiB, kind="workspace"),
               Buffer("loss", 512, output=True), Buffer("g", 512)]
    conv = "aten.convolution.default"
    ops = [Op("conv1", inputs=["x", "w1"], outputs=["y1"], target=conv, meta={"phase": "forward"}),
           Op("relu", inputs=["y1"], outputs=["r"], target="aten.relu.default", meta={"phase": "forward"}),
           Op("conv2", inputs=["r", "w2"], outputs=["y2", "workspace:conv2"], target=conv,
              meta={"phase": "forward"}),
           Op("sum", inputs=["y2"], outputs=["loss"], target="aten.sum.default", meta={"phase": "forward"}),
           Op("bwd", inputs=["loss"], outputs=["g"], target="aten.ones_like.default", meta={"phase": "backward"})]
    return Graph(buffers, ops)


def test_workspaces_are_the_allocations_freed_right_after_a_convolutions_output():
    g = forward_step()
    trace = [
        ["alloc", 100, 8 * MiB],                 # y1
        ["alloc", 200, 5 * MiB + 17],            # conv1's workspace: freed at once
        ["free_requested", 200, 5 * MiB + 17], ["free_completed", 200, 5 * MiB + 17],
        ["alloc", 300, 8 * MiB],                 # r
        ["alloc", 350, 1000],                    # something the graph does not have: skipped
        ["alloc", 400, 12 * MiB],                # y2; conv2 took no workspace (the graph's is an estimate)
        ["alloc", 500, 512],                     # loss
        ["free_requested", 100, 8 * MiB],
        ["alloc", 600, 7 * MiB], ["free_requested", 600, 7 * MiB],  # backward: not read
    ]
    found = forward_conv_workspaces(g, trace)
    assert found == {((1, 8, 2, 2), (16, 8, 3, 3), (1, 16, 2, 2), "float32"): 5 * MiB + 17,
                     ((1, 16, 2, 2), (24, 16, 1, 1), (1, 24, 2, 2), "float32"): 0}
