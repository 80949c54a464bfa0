"""The library-workspace estimates (model_ir.workspaces)."""

import pytest

from model_ir.workspaces import cublas_workspace_bytes, eager_threads, workspace_bytes

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
    assert workspace_bytes("cuda", threads=eager_threads(True)) == 64 * MiB
    assert workspace_bytes("cuda", threads=eager_threads(False)) == 32 * MiB
