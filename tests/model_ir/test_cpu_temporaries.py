"""The rules of ``model_ir.torch.cpu_temporaries`` against what CPU kernels allocate."""

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from model_ir.testing.live_memory import exact_peak_allocated_during
from model_ir.torch.cpu_temporaries import kernel_temporaries

aten = torch.ops.aten


def _indices(rows, cols, transposed=False):
    g = torch.Generator().manual_seed(0)
    if transposed:
        return torch.randint(0, 100, (cols, rows), generator=g).t()
    return torch.randint(0, 100, (rows, cols), generator=g)


#: name -> (one aten call, its arguments)
CALLS = {
    "clone-transposed": (lambda x: aten.clone(x, memory_format=torch.contiguous_format),
                         lambda: (torch.randn(90, 70).t(),)),
    "clone-transposed-bf16": (lambda x: aten.clone(x, memory_format=torch.contiguous_format),
                              lambda: (torch.randn(90, 70, dtype=torch.bfloat16).t(),)),
    "clone-transposed-below-a-tile": (lambda x: aten.clone(x, memory_format=torch.contiguous_format),
                                      lambda: (torch.randn(50, 50).t(),)),
    "clone-permuted": (lambda x: aten.clone(x, memory_format=torch.contiguous_format),
                       lambda: (torch.randn(8, 60, 70).permute(2, 0, 1),)),
    "to-copy-transposed-indices": (lambda x: aten._to_copy(x, memory_format=torch.contiguous_format),
                                   lambda: (_indices(64, 64, transposed=True),)),
    "to-copy-converting": (lambda x: aten._to_copy(x, dtype=torch.float64, memory_format=torch.contiguous_format),
                           lambda: (torch.randn(90, 70).t(),)),
    "embedding-transposed-indices": (lambda w, i: aten.embedding(w, i),
                                     lambda: (torch.randn(100, 1), _indices(64, 64, transposed=True))),
    "embedding-transposed-indices-wide": (lambda w, i: aten.embedding(w, i),
                                          lambda: (torch.randn(100, 32), _indices(64, 64, transposed=True))),
    "embedding-backward-permuted": (
        lambda g, i: aten.embedding_dense_backward(g, i, 100, -1, False),
        lambda: (torch.randn(64, 64, 8).permute(1, 0, 2), _indices(64, 64, transposed=True))),
    "embedding-backward-transposed-rows": (
        lambda g, i: aten.embedding_dense_backward(g, i, 100, 3, True),
        lambda: (torch.randn(64, 4000).t(), _indices(1, 4000)[0])),
    "batch-norm-backward-unmeasured": (  # measured at capture; when not, its rule stands
        lambda g, x, w: aten.native_batch_norm_backward(g, x, w, None, None, w, w, True, 1e-5, [True, True, True]),
        lambda: (torch.randn(4, 8, 16, 16), torch.randn(4, 8, 16, 16), torch.ones(8))),
    "softmax-backward-expanded": (
        lambda g, y: aten._softmax_backward_data(g, y, -1, torch.float32),
        lambda: (torch.ones(()).expand(4, 8, 64), torch.randn(4, 8, 64).softmax(-1))),
    "upsample-linear1d": (lambda x: aten.upsample_linear1d(x, [13], True),
                          lambda: (torch.randn(2, 3, 5, dtype=torch.float64),)),
    "upsample-bicubic2d-channels-last-bf16": (
        lambda x: aten.upsample_bicubic2d(x, [7, 9], False),
        lambda: (torch.randn(2, 3, 5, 6, dtype=torch.bfloat16).to(memory_format=torch.channels_last),)),
    "upsample-trilinear3d": (lambda x: aten.upsample_trilinear3d(x, [6, 10, 3], False),
                             lambda: (torch.randn(2, 3, 4, 5, 6),)),
    "upsample-nearest-exact3d": (lambda x: aten._upsample_nearest_exact3d(x, [8, 2, 12]),
                                 lambda: (torch.randn(1, 2, 4, 5, 6),)),
    # repeat's index tensors, 32 bytes per dimension of its result (a strided input too)
    "repeat-1d": (lambda x: aten.repeat(x, [3]), lambda: (torch.randn(5),)),
    "repeat-2d-strided": (lambda x: aten.repeat(x, [1, 2]), lambda: (torch.randn(512, 16)[:, :4],)),
    "repeat-adds-dimensions": (lambda x: aten.repeat(x, [2, 1, 2, 1]), lambda: (torch.randn(3, 4, 5),)),
    "kthvalue": (lambda x: aten.kthvalue(x, 3, 1), lambda: (torch.randn(8, 16, 5),)),
    "kthvalue-float64-last-dim": (lambda x: aten.kthvalue(x, 2, -1),
                                  lambda: (torch.randn(8, 16, 5, dtype=torch.float64),)),
    "median-all": (lambda x: aten.median(x), lambda: (torch.randn(8, 16, 5),)),
    "median-last-dim": (lambda x: aten.median.dim(x, -1), lambda: (torch.randn(8, 16, 5),)),
    "median-first-dim": (lambda x: aten.median.dim(x, 0), lambda: (torch.randn(8, 16, 5),)),
    "nanmedian-transposed-last-dim": (lambda x: aten.nanmedian.dim(x, -1), lambda: (torch.randn(16, 8).t(),)),
    "mul-float-by-bool-mask": (lambda a, m: aten.mul(a, m), lambda: (torch.randn(8, 32), torch.randn(8, 32) > 0)),
    "add-bf16-row-to-float": (lambda a, r: aten.add(a, r), lambda: (torch.randn(8, 32), torch.randn(32).bfloat16())),
    "div-integers": (lambda a, b: aten.div(a, b), lambda: (torch.arange(1, 65).view(8, 8), torch.arange(1, 9))),
    "lt-double-float": (lambda a, b: aten.lt(a, b), lambda: (torch.randn(8, 32).double(), torch.randn(8, 32))),
    "where-mixed": (lambda c, a, b: aten.where(c, a, b),
                    lambda: (torch.randn(8, 32) > 0, torch.randn(8, 32), torch.randn(8, 32).bfloat16())),
    "addcdiv-mixed": (lambda a, b, c: aten.addcdiv(a, b, c),
                      lambda: (torch.randn(8, 32).double(), torch.randn(8, 32), torch.randn(8, 32).bfloat16())),
    # a number for a tensor operand (an optimizer's p.mul_(1 - lr * wd)) is wrapped as a
    # 0-dim float64/int64 tensor, then cast to the common dtype
    "mul-by-a-float": (lambda a: aten.mul.Tensor(a, 0.5), lambda: (torch.randn(16, 4),)),
    "add-an-int-to-bf16": (lambda a: aten.add.Tensor(a, 1), lambda: (torch.randn(16, 4).bfloat16(),)),
    "add-an-int-to-int64": (lambda a: aten.add.Tensor(a, 1), lambda: (torch.arange(64).view(16, 4),)),
    "mul-complex-by-a-float": (lambda a: aten.mul.Tensor(a, 2.0), lambda: (torch.randn(16, 4, dtype=torch.cfloat),)),
    "mul-scalar": (lambda a: aten.mul.Scalar(a, 0.5), lambda: (torch.randn(16, 4),)),
    "sub-scalar-float64": (lambda a: aten.sub.Scalar(a, 1), lambda: (torch.randn(16, 4, dtype=torch.float64),)),
    "eq-scalar-ints-to-a-float": (lambda a: aten.eq.Scalar(a, 0.5), lambda: (torch.arange(64).view(16, 4),)),
    "div-scalar-ints": (lambda a: aten.div.Scalar(a, 2.0), lambda: (torch.arange(64).view(16, 4),)),
    "add-scalar-to-bools": (lambda a: aten.add.Scalar(a, 1), lambda: (torch.randn(16, 4) > 0,)),
    "rsub-scalar-bf16": (lambda a: aten.rsub.Scalar(a, 1), lambda: (torch.randn(16, 4).bfloat16(),)),
    "pow-of-a-number": (lambda a: aten.pow.Scalar(2.0, a), lambda: (torch.randn(16, 4),)),
    "floor-divide-scalar": (lambda a: aten.floor_divide.Scalar(a, 2), lambda: (torch.randn(16, 4),)),
    "bitwise-or-scalar-int32": (lambda a: aten.bitwise_or.Scalar(a, 1), lambda: (torch.arange(64, dtype=torch.int32),)),
    # reductions of bools or integers cast a copy of the input to the result's dtype (int64)
    "sum-of-a-bool-mask": (lambda m: aten.sum(m), lambda: (torch.randn(64, 64) > 0,)),
    "sum-dim-of-a-bool-mask": (lambda m: aten.sum.dim_IntList(m, [1]), lambda: (torch.randn(16, 64, 8) > 0,)),
    "cumsum-int32": (lambda a: aten.cumsum(a, 1), lambda: (torch.arange(512, dtype=torch.int32).view(8, 64),)),
    "cumsum-float": (lambda a: aten.cumsum(a, 1), lambda: (torch.randn(8, 64),)),
    "prod-dim-int32": (lambda a: aten.prod.dim_int(a, 0), lambda: (torch.arange(512, dtype=torch.int32).view(8, 64),)),
    "count-nonzero-dim": (lambda a: aten.count_nonzero.dim_IntList(a, [0]), lambda: (torch.randn(32, 16),)),
    "count-nonzero-dim-bool": (lambda a: aten.count_nonzero.dim_IntList(a, [1]), lambda: (torch.randn(32, 16) > 0,)),
    "log-softmax-backward-transposed": (
        lambda g, y: aten._log_softmax_backward_data(g, y, 0, torch.float32),
        lambda: (torch.randn(100, 80).t(), torch.randn(100, 80).t())),
}


@pytest.mark.parametrize("size", [[4, 3, 16, 12], [2, 1, 8, 9, 10], [1, 1, 1, 33], [1, 1, 33, 1], [1, 1, 3, 3],
                                  [1, 1, 1, 1], [1, 1, 50, 1, 1]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_rule_is_its_base_grid(size, dtype, align_corners):
    """``affine_grid_generator`` (one op at capture, which traces in real mode; its
    backward is traced as its ops) takes its base grid of homogeneous coordinates, and
    without ``align_corners`` the scaled coordinates of an axis where they outgrow the
    result (within 4 bytes)."""
    torch.set_num_threads(2)
    theta = torch.randn(size[0], len(size) - 2, len(size) - 1, dtype=dtype)

    def fn(t):
        return aten.affine_grid_generator(t, size, align_corners)

    traced = make_fx(fn, tracing_mode="real")(theta)
    (node,) = [n for n in traced.graph.nodes if isinstance(n.target, torch._ops.OpOverload)]
    peak, result = exact_peak_allocated_during(lambda: fn(theta))
    measured = peak - result.untyped_storage().nbytes()
    assert measured <= kernel_temporaries(node) <= measured + 4


@pytest.mark.parametrize("name", sorted(CALLS))
def test_rule_is_what_the_kernel_allocates_and_frees(name):
    """Each rule gives the exact peak of the call's allocations less its result,
    allocation by allocation (torch.profiler's raw memory events)."""
    torch.set_num_threads(2)
    fn, make = CALLS[name]
    args = make()
    traced = make_fx(fn, tracing_mode="fake")(*args)
    (node,) = [n for n in traced.graph.nodes if isinstance(n.target, torch._ops.OpOverload)]
    peak, result = exact_peak_allocated_during(lambda: fn(*args))
    results = result if isinstance(result, tuple) else (result,)
    measured = peak - sum(t.untyped_storage().nbytes() for t in results if isinstance(t, torch.Tensor))
    assert kernel_temporaries(node) == measured


@pytest.mark.parametrize("shape", [(2, 2), (16, 16), (33, 33), (3, 16, 16), (2, 5, 8, 8), (1, 1, 7, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_matrix_exponential_rule_bounds_every_norm(shape, dtype):
    """``linalg_matrix_exp`` picks its polynomial's degree by the input's norm; the rule is
    the most it takes (degree 18, reached above a norm of about 0.1), within 300 bytes."""
    torch.set_num_threads(2)
    fn = aten.linalg_matrix_exp.default
    g = torch.Generator().manual_seed(0)
    for scale in (0.0, 1e-4, 0.01, 0.1, 1.0, 1e4):
        a = torch.randn(*shape, dtype=dtype, generator=g) * scale
        (node,) = [n for n in make_fx(fn, tracing_mode="fake")(a).graph.nodes
                   if isinstance(n.target, torch._ops.OpOverload)]
        peak, result = exact_peak_allocated_during(lambda: fn(a))
        measured = peak - result.untyped_storage().nbytes()
        assert measured <= kernel_temporaries(node), (scale, measured)
        if scale >= 1:
            assert kernel_temporaries(node) - measured <= 300, (scale, measured)
