"""The library-workspace estimates (model_ir.workspaces)."""

import pytest

from model_ir.graph import Buffer, Graph, Op
from model_ir.workspaces import cublas_threads, cublas_workspace_bytes, uses_cublas, workspace_bytes

MiB, KiB = 1 << 20, 1 << 10


@pytest.mark.parametrize("capability,expected", [((9, 0), 32 * MiB), ((10, 0), 32 * MiB), ((12, 0), 32 * MiB),
                                                 ((8, 0), 8 * MiB + 128 * KiB), ((7, 5), 8 * MiB + 128 * KiB)])
def test_pytorchs_default_cublas_workspace(capability, expected):
    assert cublas_workspace_bytes(capability) == expected


def test_cublas_workspace_config_overrides_the_default():
    assert cublas_workspace_bytes((9, 0), ":4096:2:16:8") == 8 * MiB + 128 * KiB
    assert cublas_workspace_bytes((8, 0), ":16:8") == 128 * KiB
    assert cublas_workspace_bytes((9, 0), "garbage") == 32 * MiB  # PyTorch warns and uses the default


def test_workspaces_only_on_cuda_and_per_thread():
    assert workspace_bytes("cpu", threads=2) == workspace_bytes(None, threads=1) == 0
    assert workspace_bytes("cuda", threads=2) == 64 * MiB and workspace_bytes("cuda", threads=0) == 0


def step(*ops):
    return Graph([Buffer(f"b{i}", 512) for i in range(len(ops))],
                 [Op(f"o{i}", outputs=[f"b{i}"], target=t, meta={"phase": p}) for i, (t, p) in enumerate(ops)])


def test_threads_that_run_cublas():
    assert uses_cublas("aten.addmm.default") and uses_cublas("aten.bmm.default")
    assert not uses_cublas("aten.convolution.default") and not uses_cublas(None) and not uses_cublas("mm")
    train = step(("aten.addmm.default", "forward"), ("aten.mm.default", "backward"), ("aten.add_.Tensor", "optimizer"))
    assert cublas_threads(train, eager=True) == 2 and cublas_threads(train, eager=False) == 1
    convs = step(("aten.convolution.default", "forward"), ("aten.convolution_backward.default", "backward"))
    assert cublas_threads(convs, eager=True) == cublas_threads(convs, eager=False) == 0  # squeezenet: none
    forward_only = step(("aten.mm.default", "forward"), ("aten.convolution_backward.default", "backward"))
    assert cublas_threads(forward_only, eager=True) == 1
