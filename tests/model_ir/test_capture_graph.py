"""The storage-level IR of captured steps: buffers, aliasing, hazards, RNG order,
kinds, the FX mapping, inputs given as specs or fake/meta models, and clear errors."""

from __future__ import annotations

import itertools
import logging
import random
import re
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

from model_ir import graph_from_dict, graph_to_dict, simulate
from model_ir.frontends import load
from model_ir.testing.torch_models import TransformerBlock, mlp, small_cnn
from model_ir.torch import CaptureError, TensorSpec, capture, capture_step, init_optimizer_state


class SplitModel(torch.nn.Module):
    """Uses list-returning views (split, unbind, chunk) and an in-place op on a view."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 12)

    def forward(self, x):
        y = self.lin(x)
        a, b, c = y.split(4, dim=1)
        rows = torch.unbind(a, dim=0)
        d, e = b.chunk(2, dim=1)
        z = y * 1.0
        z[:, 8:].mul_(2.0)  # in place through a view: writes z's storage
        return rows[0].sum() + d.sum() * e.sum() + c.sum() + z.sum()


def test_list_views_share_the_storage_of_their_base():
    model = SplitModel()
    step = capture_step(model, torch.randn(3, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    g = step.graph
    addmm = next(op for op in g.ops if op.target == "aten.addmm.default")
    assert all(op.outputs == () or op is addmm for op in g.ops[: g.op_index[addmm.id]])
    mul = next(op for op in g.ops if op.target == "aten.mul.Tensor")
    (y,) = mul.outputs
    # chunk is split at the aten level; list-returning views are folded and live in addmm's storage
    for name in ("split", "unbind"):
        views = [n for n in step.folded if n.startswith(name)]
        assert len(views) == (2 if name == "split" else 1), name
        assert all(step.node_buffers[n] == addmm.outputs for n in views)
        assert not any(op.target and f"aten.{name}." in op.target for op in g.ops)
    mul_ = next(op for op in g.ops if op.target == "aten.mul_.Tensor" and op.meta["phase"] == "forward")
    assert mul_.mutates == (y,) and mul_.outputs == ()
    # every op reading y after the write is ordered after it (read-after-write)
    for i, op in enumerate(g.ops):
        if y in op.inputs and i > g.op_index[mul_.id]:
            assert g.op_index[mul_.id] in g.predecessors[i]


def test_buffers_kinds_and_persistence():
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = capture(model, torch.randn(2, 3, 16, 16), optimizer=opt)
    kinds = {}
    for b in g.buffers:
        kinds.setdefault(b.kind, []).append(b)
    n_params = len(list(model.parameters()))
    assert len(kinds["parameter"]) == n_params
    assert len(kinds["optimizer_state"]) == 3 * n_params  # step, exp_avg, exp_avg_sq
    assert len(kinds["model_buffer"]) == len(list(model.buffers()))
    assert len(kinds["input"]) == 1
    assert all(b.persistent for k in ("parameter", "optimizer_state", "model_buffer", "input") for b in kinds[k])
    (loss,) = kinds["output"]
    assert loss.output and not loss.persistent and loss.shape == ()
    assert kinds["activation"] and kinds["gradient"]
    assert all(not b.persistent for k in ("activation", "gradient") for b in kinds[k])
    # BatchNorm updates its running statistics in place
    mutated = {b for op in g.ops for b in op.mutates}
    assert all(b.id in mutated for b in kinds["model_buffer"])
    # every parameter is updated in place, after every earlier reader of it
    for b in kinds["parameter"]:
        bi = g.buffer_index[b.id]
        writers = g.writers[bi]
        assert writers, b.id
        readers = [u for u in g.users[bi] if u < writers[0]]
        assert readers and all(r in g.predecessors[writers[0]] for r in readers)


def test_sizes_are_storage_bytes_rounded_to_granularity():
    model = mlp(10, 2, classes=3)
    g = capture(model, torch.randn(5, 10), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), granularity=64)
    w = g.buffer("parameter:0.weight")
    assert w.shape == (10, 10) and w.dtype == "float32" and w.size == 448  # 400 bytes -> 7 * 64
    assert g.buffer("input:inputs[0]").size == 256  # 200 bytes
    assert all(b.size % 64 == 0 for b in g.buffers)


def test_rng_ops_keep_their_relative_order():
    model = TransformerBlock(8, 2, dropout=0.3)
    g = capture(model, torch.randn(2, 4, 8), optimizer=torch.optim.AdamW(model.parameters()))
    rng = [op for op in g.ops if torch.Tag.nondeterministic_seeded in _overload(op.target).tags]
    assert len(rng) == 3
    for prev, op in itertools.pairwise(rng):
        assert prev.id in op.after


def _overload(target: str):
    ns, name, overload = target.split(".")
    return getattr(getattr(getattr(torch.ops, ns), name), overload)


def test_every_op_maps_to_its_fx_node_and_every_node_is_an_op_or_folded():
    model = TransformerBlock(8, 2)
    step = capture_step(model, torch.randn(2, 4, 8), optimizer=torch.optim.Adam(model.parameters()))
    nodes = {n.name: n for n in step.module.graph.nodes}
    for op in step.graph.ops:
        assert op.id in nodes and op.meta["node"] == op.id and step.op_nodes[op.id][0] == op.id
        assert op.target == str(nodes[op.id].target)
        assert all(n in step.folded for n in step.op_nodes[op.id][1:])
    for n in step.module.graph.nodes:
        if n.op == "call_function":
            assert (n.name in step.op_nodes) != (n.name in step.folded), n.name
    # placeholders: one IR buffer per step input, named after the slot
    for slot in step.inputs:
        assert step.graph.buffer(f"{slot.kind}:{slot.name}").meta["node"] == slot.placeholder
    # optimizer .item() feeds scalar arithmetic: the consumer depends on the reader op
    items = [op for op in step.graph.ops if op.target == "aten._local_scalar_dense.default"]
    assert items and all(any(i.id in op.after for op in step.graph.ops) for i in items)


def test_eval_mode_is_forward_only_with_model_outputs():
    model = mlp(8, 2)
    g = capture(model, torch.randn(4, 8), train=False)
    assert {op.meta["phase"] for op in g.ops} == {"forward"}
    assert {b.kind for b in g.buffers if b.persistent} == {"parameter", "input"}
    (out,) = [b for b in g.buffers if b.output]
    assert out.shape == (4, 10)


def test_json_round_trip_keeps_the_captured_graph():
    model = small_cnn()
    g = capture(model, torch.randn(2, 3, 16, 16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert graph_from_dict(graph_to_dict(g)) == g


def test_specs_fake_and_meta_models_need_no_real_memory():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake_model = mlp(64, 3)
    with torch.device("meta"):
        meta_model = mlp(64, 3)
    real_model = mlp(64, 3)
    graphs = [
        capture(m, x, optimizer=torch.optim.Adam(m.parameters()), granularity=1)
        for m, x in ((fake_model, TensorSpec((4, 64))), (meta_model, torch.empty(4, 64, device="meta")),
                     (real_model, torch.randn(4, 64)))
    ]
    profiles = [simulate(g) for g in graphs]
    assert len({p.timeline for p in profiles}) == 1
    assert len({len(g.ops) for g in graphs}) == 1


@pytest.mark.parametrize("make_model", [lambda: mlp(8, 2), small_cnn], ids=["mlp", "cnn"])
def test_capture_leaves_model_and_optimizer_untouched(make_model):
    """Nor do the kernels capture runs to measure their temporaries on the model's own
    weights (a batch norm's running statistics, which it updates, were: 2026-12-03)."""
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, torch.randn(4, 8) if isinstance(model[0], torch.nn.Linear) else torch.randn(4, 3, 8, 8),
            optimizer=opt)
    assert not opt.state and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["params"][0] is model[0].weight


def test_keyword_inputs_targets_and_loss_fn():
    model = mlp(8, 2, classes=4)

    def loss_fn(out, y):
        return torch.nn.functional.cross_entropy(out, y)

    g = capture(model, {"input": torch.randn(4, 8)}, targets=(torch.tensor([0, 1, 2, 3]),), loss_fn=loss_fn,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert g.buffer("target:targets[0]").dtype == "int64"
    assert g.buffer("input:inputs[0]").persistent


class DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        if y.sum() > 0:
            return y * 2
        return y


class Nonzero(DataDependent):
    def forward(self, x):
        y = self.lin(x)
        return y[torch.nonzero(y > 0, as_tuple=True)].sum()


def test_data_dependent_control_flow_is_a_clear_error():
    with pytest.raises(CaptureError, match=r"data-dependent.*test_capture_graph.py:\d+ \(forward\)"):
        capture(DataDependent(), torch.randn(2, 4))


def test_data_dependent_code_in_a_torch_module_names_the_module_source():
    # BatchNorm without momentum reads num_batches_tracked's value (a cumulative average).
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4, momentum=None))
    with pytest.raises(CaptureError, match=r"data-dependent.* at torch/nn/modules/batchnorm.py:\d+ \(forward\); "
                                           r"BatchNorm with momentum=None .*give it a momentum"):
        capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


class _Policy(torch.nn.Module):
    def __init__(self, validate_args):
        super().__init__()
        self.mu, self.validate_args = torch.nn.Linear(4, 2), validate_args

    def forward(self, x):
        dist = torch.distributions.Normal(self.mu(x), 1.0, validate_args=self.validate_args)
        return dist.log_prob(dist.rsample()).mean()


def test_distributions_validating_their_arguments_get_a_hint():
    with pytest.raises(CaptureError, match=r"test_capture_graph.py:\d+ \(forward\); torch.distributions checks .*"
                                           r"validate_args=False"):
        # explicit: torch.compile turns the default off for the whole process (TorchPatcher)
        capture(_Policy(validate_args=True), torch.randn(3, 4))
    assert capture(_Policy(validate_args=False), torch.randn(3, 4)).ops


def test_an_optimizer_branching_on_its_state_is_named_with_a_hint():
    model = torch.nn.Linear(4, 2)
    with pytest.raises(CaptureError, match=r"data-dependent.* at torch/optim/asgd.py:\d+ \(_\w+_asgd\); this "
                                           r"optimizer's update branches on values of its state"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.ASGD(model.parameters()))
    # SGD(momentum=tensor) branches on the momentum's value: the hint says to pass a float
    # (it only recommended SGD, the optimizer at hand)
    with pytest.raises(CaptureError, match=r"at torch/optim/sgd.py.*\(SGD's momentum, weight_decay: `if momentum "
                                           r"!= 0`\): pass that one as a float"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                                                    momentum=torch.tensor(0.9)))


class _PackedLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)

    def forward(self, x, lengths):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        return self.lstm(packed)[1][0].sum()


def test_clipping_that_checks_the_norm_gets_a_hint():
    model = torch.nn.Linear(4, 2)
    clip = lambda ps: torch.nn.utils.clip_grad_norm_(ps.values(), 1.0, error_if_nonfinite=True)  # noqa: E731
    with pytest.raises(CaptureError, match=r"test_capture_graph.py:\d+ \(<lambda>\); clip_grad_norm_\(error_if_"
                                           r"nonfinite=True\) checks the norm's value"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), before_step=clip)


def _one_hot_loss(out, y):
    return (out - torch.nn.functional.one_hot(y).float()).square().mean()


def _bincount_loss(out, y):
    return torch.nn.functional.cross_entropy(out, y, weight=1.0 / (torch.bincount(y, minlength=2).float() + 1))


def _gaussian_loss(out, y):
    return torch.nn.functional.gaussian_nll_loss(out[:, 0], y.float(), out[:, 1].exp())


@pytest.mark.parametrize("loss_fn, hint", [
    (_one_hot_loss, r"\(_one_hot_loss\); one_hot without num_classes reads the largest label: pass num_classes="),
    (_bincount_loss, r"\(_bincount_loss\); bincount's length is the largest value plus one: count with one_hot"),
    (_gaussian_loss, r"\(_gaussian_loss\); gaussian_nll_loss checks that var has no negative entry"),
], ids=["one_hot", "bincount", "gaussian_nll_loss"])
def test_losses_that_read_label_values_get_a_hint(loss_fn, hint):
    """One-hot targets without num_classes, class weights counted per batch, the Gaussian
    NLL's variance check: each reads a value; the error names the user's line and the
    way out (one that torch's own code reads with no frame of its own: by the call in that
    line)."""
    model = torch.nn.Linear(4, 2)
    with pytest.raises(CaptureError, match=hint):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn,
                targets=(torch.tensor([0, 1, 1]),))


def test_a_packed_sequence_gets_a_hint():
    with pytest.raises(CaptureError, match=r"test_capture_graph.py:\d+ \(forward\); an RNN given a PackedSequence "
                                           r".*run it on the padded batch instead"):
        capture(_PackedLSTM(), (torch.randn(3, 5, 4), torch.tensor([5, 3, 2])))


def test_quantization_aware_training_says_it_is_not_supported():
    """FakeQuantize branches on its flags, buffer values: named at the user's call, with the reason."""
    from torch.ao.quantization import FakeQuantize

    model = torch.nn.Sequential(FakeQuantize(), torch.nn.Linear(4, 2))
    with pytest.raises(CaptureError, match=r"data-dependent operation.*; torch.ao.quantization's fake quantization "
                                           r"branches on values of its buffers .*not supported"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_data_dependent_shape_names_the_operator():
    # named where the user's forward calls it, with the way out
    with pytest.raises(CaptureError, match=r"aten.nonzero.default has an output shape that depends on tensor values "
                                           r"at .*test_capture_graph.py:\d+ \(forward\); .*torch.where\(mask, x, 0\)"):
        capture(Nonzero(), torch.randn(2, 4))


def test_ctc_loss_says_it_is_not_supported():
    """Its result's shape follows the longest target length: not the generic advice to mask."""
    model = torch.nn.Linear(4, 5)

    def ctc(out, target):
        return torch.nn.functional.ctc_loss(out.log_softmax(-1), target, [6] * 2, [3, 2])

    with pytest.raises(CaptureError, match=r"_ctc_loss.default has an output shape .*; ctc_loss sizes its alignment "
                                           r"table by the longest target length.*not supported"):
        capture(model, torch.randn(6, 2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=ctc,
                targets=(torch.randint(1, 5, (2, 3)),))


class _LayerDrop(torch.nn.Module):
    """Hugging Face's LayerDrop, as wav2vec2 (``skip_the_layer``) and BART (``< self.layerdrop``) write it."""

    def __init__(self, bart: bool):
        super().__init__()
        self.layers, self.layerdrop, self.bart = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2)), 0.1, bart

    def forward(self, x):
        for layer in self.layers:
            if self.bart:
                if self.training and self.layerdrop > 0.0:
                    dropout_probability = torch.rand([])
                    if dropout_probability < self.layerdrop:
                        continue
                x = layer(x)
            else:
                skip_the_layer = False
                if self.training and self.layerdrop > 0.0:
                    skip_the_layer = torch.rand([]) < self.layerdrop
                if not skip_the_layer:
                    x = layer(x)
        return x


@pytest.mark.parametrize("bart", [False, True])
def test_layerdrop_gets_a_hint(bart):
    """Wav2Vec2's default config drops layers at random (layerdrop=0.1): the way out is named."""
    model = _LayerDrop(bart)
    with pytest.raises(CaptureError, match=r"test_capture_graph.py:\d+ \(forward\); LayerDrop skips a layer.*"
                                           r"rate to 0"):
        capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    model.layerdrop = 0.0
    capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


class BoolMask(DataDependent):
    def forward(self, x):
        y = self.lin(x)
        return y[y > 0].sum()


def test_boolean_indexing_names_the_user_line():
    with pytest.raises(CaptureError, match=r"test_capture_graph.py:\d+ \(forward\); a step's shapes must follow"):
        capture(BoolMask(), torch.randn(2, 4))


def test_data_dependent_size_from_a_value_is_a_clear_error():
    class FromItem(DataDependent):
        def forward(self, x):
            n = int((self.lin(x) > 0).sum().item())
            return torch.zeros(n).sum() + self.lin(x).sum()

    with pytest.raises(CaptureError, match=r"data-dependent"):
        capture(FromItem(), torch.randn(2, 4))


def test_wrong_input_shape_is_one_error_without_a_logged_traceback(caplog):
    with pytest.raises(CaptureError, match=r"cannot capture Linear: .*\[2, 5\]"):
        capture(torch.nn.Linear(4, 4), torch.randn(2, 5))
    assert not [r for r in caplog.records if r.name.startswith("torch") and r.levelno >= logging.WARNING]


def test_bad_loss_and_foreign_optimizer_parameters_are_clear_errors():
    model = mlp(4, 2)
    with pytest.raises(CaptureError, match="one element"):
        capture(model, torch.randn(2, 4), loss_fn=lambda out: out)
    other = torch.nn.Linear(3, 3)
    with pytest.raises(CaptureError, match="not a parameter of the model"):
        capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(CaptureError, match=r"LBFGS.step\(\) needs a closure"):
        capture(model, torch.randn(2, 4), optimizer=torch.optim.LBFGS(model.parameters()))
    # a loss with a learnable parameter (a temperature): named, with the way out
    loss = torch.nn.Linear(2, 1)
    with pytest.raises(CaptureError, match=r"parameter 'weight' of the loss function \(Linear\).*put the loss in "
                                           r"the model"):
        capture(model, torch.randn(2, 4), loss_fn=loss,
                optimizer=torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1))
    # ... or one it reads (uncertainty weighting's log-variances), or a module it calls
    log_vars = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(CaptureError, match=r"holds log_vars \(a variable of .*\), which the loss function reads.*"
                                           r"put the loss in the model"):
        capture(model, torch.randn(2, 4), loss_fn=lambda out: (out * log_vars.exp()).sum(),
                optimizer=torch.optim.SGD([*model.parameters(), log_vars], lr=0.1))
    with pytest.raises(CaptureError, match=r"holds parameter 'bias' of loss \(a variable of .*\), which the loss "
                                           r"function calls"):
        capture(model, torch.randn(2, 4), loss_fn=lambda out: loss(out).sum(),
                optimizer=torch.optim.SGD([*model.parameters(), loss.bias], lr=0.1))
    with pytest.raises(CaptureError, match="example_inputs"):
        capture(model, 3)
    with pytest.raises(CaptureError, match=r"wrapped by torch.compile.*model._orig_mod"):
        capture(torch.compile(model), torch.randn(2, 4))
    with pytest.raises(CaptureError, match=r"compiled with torch.compile \(a submodule or the loss\)"):
        capture(model, torch.randn(2, 4), loss_fn=torch.compile(lambda out: out.sum()),
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CaptureError, match=r"wrapped by DataParallel.*silently diverge"):
        capture(torch.nn.DataParallel(model), torch.randn(2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.nn.Sequential(torch.jit.script(torch.nn.Linear(4, 4)))
    with pytest.raises(CaptureError, match=r"0 is a TorchScript module .*the Python module it was made from"):
        capture(scripted, torch.randn(2, 4), optimizer=torch.optim.SGD(scripted.parameters(), lr=0.1))


class _CachingForward(torch.nn.Module):
    """Caches a table in a plain attribute on first use and counts its calls, as rotary
    embeddings and logging code do."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("freq", torch.arange(4.0), persistent=False)
        self.table = None

    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        if self.table is None:
            self.table = torch.sin(self.freq[None] * torch.arange(x.shape[0])[:, None])
        return self.lin(x + self.table)


@pytest.mark.parametrize("train", [True, False])
def test_attributes_a_forward_sets_are_put_back_after_the_capture(train):
    """... and a Python value the forward changes (a call counter) is named in a warning,
    attributed to the caller's line: no optimized step will change it, as eager's would."""
    model = _CachingForward()
    inner = model.lin
    with pytest.warns(UserWarning, match=r"forward changes Python attributes \(_CachingForward.calls\)") as seen:
        capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1) if train else None,
                train=train)
    assert [w.filename for w in seen if "Python attributes" in str(w.message)] == [__file__]
    # The traced forward bound a fake tensor to model.table: the next eager call would break.
    assert model.table is None and not hasattr(model, "calls") and model.lin is inner and model.training
    assert model(torch.randn(2, 4)).shape == (2, 4) and isinstance(model.table, torch.Tensor)
    quiet = _CachingForward()
    quiet.forward = lambda x: quiet.lin(x + torch.sin(quiet.freq))  # no Python state changed: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture(quiet, torch.randn(2, 4), train=train)


def test_a_tensor_attribute_the_forward_replaces_is_named_in_a_warning():
    """Pruning's pre-hook sets ``module.weight = weight_orig * weight_mask`` at every
    call: an optimized step computes it inside its plan, so the attribute keeps the
    tensor it held before the capture, and a warning says so. A cache the forward
    creates (none before) is no such attribute."""
    import torch.nn.utils.prune as prune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    before = model[0].weight
    with pytest.warns(UserWarning, match=r"sets tensor attributes of its modules \(Linear.weight;"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert model[0].weight is before
    cached = _CachingForward()
    cached.forward = lambda x: cached.lin(x + cached.__dict__.setdefault("table", torch.sin(cached.freq)))
    del cached.table  # a tensor the forward caches, absent before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture(cached, torch.randn(2, 4), train=False)


def test_optimizer_step_hooks_do_not_run_at_capture_and_pre_hooks_are_named_in_a_warning():
    """Capture calls ``step()`` on fake tensors: a step hook (an EMA update of the real
    model) ran twice there. Now none runs at capture, nor while the optimizer's state is
    made; a warning says an optimized step will not call the pre-hooks (it calls the
    post-hooks: ``test_optimizer_step_post_hooks_run_after_each_optimized_update_as_in_eager``),
    and they are all back afterwards."""
    calls = []
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    try:
        with pytest.warns(UserWarning, match=r"the optimizer has step pre-hooks \(1, .*pre-hook's work on the "
                          "gradients as before_step"):
            capture(model, torch.randn(3, 4), optimizer=opt)
        init_optimizer_state(opt)
        assert calls == []
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        assert calls == ["pre", "post"]
    finally:
        handle.remove()


class _LazyHooks(torch.nn.Module):
    """Installs a forward hook at its first call, behind a flag, as Hugging Face's output
    capturing does (Segformer's decoder reads the hidden states its hooks collect)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if not getattr(self, "_hooked", False):
            self.lin.register_forward_hook(lambda module, args, out: out * 2)
            self._hooked = True
        return self.lin(x)


def test_hooks_a_forward_installs_are_taken_off_with_its_flag():
    """Capture puts the flag back, and so the hook: kept, the next eager call installed a
    second one (Segformer then failed on a shape). No warning: the flag goes with the hooks."""
    import copy

    model, x = _LazyHooks(), torch.randn(2, 4)
    fresh = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hooks' installation flag is no state the step should set
        capture(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not model.lin._forward_hooks and not hasattr(model, "_hooked")
    assert torch.equal(model(x), fresh(x))


class _LazyMask(torch.nn.Module):
    """Registers a buffer on first use, as some attention code caches its causal mask."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if "mask" not in self._buffers:
            self.register_buffer("mask", torch.tril(torch.ones(4, 4)), persistent=False)
        return self.lin(x) @ self.mask


@pytest.mark.parametrize("train", [True, False])
def test_a_buffer_registered_by_the_traced_forward_is_taken_back(train):
    """The trace registered a fake tensor as the module's buffer: the next eager call
    computed with it (fake results), and state_dict() held it."""
    from torch._subclasses.fake_tensor import FakeTensor

    model = _LazyMask()
    capture(model, torch.randn(2, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1) if train else None,
            train=train)
    assert "mask" not in model._buffers
    out = model(torch.randn(2, 4))
    assert not isinstance(out, FakeTensor) and not isinstance(model.mask, FakeTensor)


class _StoredActivations(torch.nn.Module):
    """A forward hook keeps an activation in a dict (feature extraction, perceptual losses)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.acts = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2), {}
        self.a.register_forward_hook(lambda module, args, out: self.acts.__setitem__("a", out))

    def forward(self, x):
        return self.b(self.a(x))


def test_tensors_a_forward_keeps_in_containers_are_named_in_a_warning():
    model = _StoredActivations()
    with pytest.warns(UserWarning, match=r"keep tensors in Python \(_StoredActivations.acts;") as seen:
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert [w.filename for w in seen if "keep tensors" in str(w.message)] == [__file__]


_FEATURES: dict = {}  # filled by a forward hook below (a global, as feature-extraction scripts keep it)


class _SavedOutputs:
    """A hook object that keeps what it sees (torchvision's feature extraction recipes)."""

    def __init__(self):
        self.outputs = []

    def __call__(self, module, args, out):
        self.outputs.append(out)


def test_tensors_hooks_and_the_loss_keep_outside_the_model_are_named_in_a_warning():
    """Activations a hook keeps in a global, a hook object's list or a closure's list,
    and a loss that logs a tensor: each holds a fake tensor of the capture after it (and
    no step puts a real one there); the warning names where. Hooks that keep nothing
    (a gradient hook that scales) are not named."""
    from torch._subclasses.fake_tensor import FakeTensor

    model, saver, norms, logged = mlp(4, 2), _SavedOutputs(), [], []
    model[0].register_forward_hook(lambda module, args, out: _FEATURES.__setitem__("hidden", out.detach()))
    model[1].register_forward_hook(saver)
    model[0].weight.register_hook(lambda g: norms.append(g.norm()))
    model[2].weight.register_hook(lambda g: g * 0.5)

    def loss_fn(out):
        logged.append(out.detach())
        return out.square().mean()

    try:
        with pytest.warns(UserWarning, match="keep tensors in Python") as seen:
            capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn)
        message = next(str(w.message) for w in seen if "keep tensors" in str(w.message))
        assert "_FEATURES (a global of" in message and "self.outputs (of _SavedOutputs.__call__)" in message
        assert "norms (a variable of" in message and "logged (a variable of" in message
        assert all(isinstance(t, FakeTensor) for t in [_FEATURES["hidden"], *saver.outputs, *norms, *logged])
    finally:
        _FEATURES.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = mlp(4, 2)
        clean[0].weight.register_hook(lambda g: g * 0.5)
        capture(clean, torch.randn(3, 4), optimizer=torch.optim.SGD(clean.parameters(), lr=0.1))


class _PythonCoinDepth(torch.nn.Module):
    """Stochastic depth with Python's coin, as hand-written blocks do."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.b(x if self.training and random.random() < 0.5 else x + self.a(x))


@pytest.mark.parametrize("where", ["random in forward", "numpy in loss"])
def test_python_random_draws_are_refused_and_the_generators_left_as_they_were(where):
    """A number drawn by Python (stochastic depth's coin, mixup's lam from np.random.beta)
    was drawn once at capture and the step repeated it at every call, silently; the
    capture now refuses, naming the generator and the ways out, and consumes nothing
    from the user's seeded streams."""
    import numpy as np

    random.seed(3)
    np.random.seed(3)
    expected = random.random(), np.random.random()
    random.seed(3)
    np.random.seed(3)
    if where == "random in forward":
        model, loss_fn, generator = _PythonCoinDepth(), None, "Python's random module"
    else:
        model, generator = mlp(4, 2), "numpy.random"

        def loss_fn(out):
            lam = float(np.random.beta(0.4, 0.4))
            return lam * out.square().mean() + (1 - lam) * out.abs().mean()
    with pytest.raises(CaptureError, match=rf"draws random numbers from {generator}, .* draw them with torch"):
        capture(model, torch.randn(3, 4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn)
    assert (random.random(), np.random.random()) == expected


def test_values_read_into_python_for_nothing_are_named_in_a_warning():
    """A loss that logs its value with .item(): the capture saw a symbol, and an optimized
    step runs no Python; a value that a traced op uses is computed at every step."""
    model, x = mlp(4, 2), torch.randn(3, 4)
    logged = []

    def logging_loss(out):
        loss = out.square().mean()
        logged.append(loss.item())
        return loss

    with pytest.warns(UserWarning, match=r"reads 1 tensor value\(s\) into Python .* log the loss the step returns"
                      ) as seen:
        capture(model, x, loss_fn=logging_loss, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert [w.filename for w in seen if "into Python" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture(model, x, loss_fn=lambda out: out.square().mean() / out.detach().abs().max().item(),
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_lazy_modules_and_sparse_gradients_are_clear_errors():
    lazy = torch.nn.Sequential(torch.nn.LazyLinear(3))
    with pytest.raises(CaptureError, match=r"uninitialized parameters or buffers \(0\.weight, 0\.bias: lazy"):
        capture(lazy, torch.randn(2, 4))
    lazy(torch.randn(2, 4))  # initialized: captured
    assert capture(lazy, torch.randn(2, 4), optimizer=torch.optim.SGD(lazy.parameters(), lr=0.1)).ops
    sparse = torch.nn.Embedding(10, 4, sparse=True)
    with pytest.raises(CaptureError, match=r"parameter 'weight' gets a torch.sparse_coo gradient.*sparse=False"):
        capture(sparse, torch.randint(0, 10, (2, 3)), optimizer=torch.optim.SGD(sparse.parameters(), lr=0.1))


class _OwnGenerator(torch.nn.Module):
    """Input noise drawn from the module's own ``torch.Generator``."""

    def __init__(self):
        super().__init__()
        self.lin, self.generator = torch.nn.Linear(4, 2), torch.Generator().manual_seed(1)

    def forward(self, x):
        return self.lin(x + torch.randn(x.shape, generator=self.generator))


def test_a_random_op_with_its_own_generator_captures_or_says_which_torch_cannot():
    """torch 2.15's graph tracing holds a ``torch.Generator`` argument; torch 2.11's cannot
    (CI's compatibility run), which was reported as an operator "?" without a fake kernel."""
    model = _OwnGenerator()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 15):
        assert any(op.target == "aten.randn.generator" for op in capture(model, torch.randn(3, 4), optimizer=opt).ops)
    else:
        with pytest.raises(CaptureError, match=r"a torch.Generator of its own.*global generator"):
            capture(model, torch.randn(3, 4), optimizer=opt)


@pytest.mark.parametrize("optimizer", [torch.optim.ASGD, torch.optim.SparseAdam])
def test_an_optimizer_whose_first_step_fails_on_fake_tensors_is_a_capture_error(optimizer):
    """ASGD branches on its state's values, SparseAdam needs sparse gradients: a
    CaptureError naming the optimizer's step, not torch's exception (LBFGS, which needs
    a closure, is refused before: test_bad_loss_and_foreign_optimizer_parameters_are_clear_errors)."""
    model = mlp(4, 2)
    with pytest.raises(CaptureError, match=rf"cannot capture .*\(in {optimizer.__name__}.step\(\), run once on fake"):
        capture(model, torch.randn(2, 4), optimizer=optimizer(model.parameters()))


class ThresholdSGD(torch.optim.SGD):
    """Branches on the learning rate's size, which its sign does not decide: the update
    cannot be traced with the learning rate as an input of the step."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["lr"] > 0.05:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(0.5)
        return super().step(closure)


def _counting_traces(monkeypatch) -> list[bool]:
    """The ``lift_hyper_parameters`` of every trace capture starts."""
    import model_ir.torch.capture  # noqa: F401 - the module, not the function of the same name

    module = sys.modules["model_ir.torch.capture"]
    calls, trace_step = [], module.trace_step

    def counted(*args, **kwargs):
        calls.append(kwargs["lift_hyper_parameters"])
        return trace_step(*args, **kwargs)

    monkeypatch.setattr(module, "trace_step", counted)
    return calls


def _retry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stay constants" in r.getMessage()]


def test_an_update_branching_on_a_hyper_parameter_keeps_it_an_input_and_guards_the_branch(caplog, monkeypatch):
    """``if lr > 0.05`` in the update: traced with the learning rate's value at capture,
    the branch taken as eager takes it, the learning rate stays an input of the step and
    the condition a guard (model_ir.torch.step_guards): binding the step once the
    learning rate crossed the threshold is refused."""
    from model_ir.torch import ExecutionError

    calls = _counting_traces(monkeypatch)
    model = mlp(4, 2)
    opt = ThresholdSGD(model.parameters(), lr=0.1)
    step = capture_step(model, torch.randn(2, 4), optimizer=opt)
    assert calls == [True] and [hp.name for hp in step.hyper_parameters] == ["group0/lr"]
    assert not _retry_warnings(caplog)
    [guard] = step.guards
    assert guard.sources == (("hyper", "group0/lr"),) and "0.05" in guard.key
    step.bind(model, opt, torch.randn(2, 4))
    opt.param_groups[0]["lr"] = 0.06  # the same branch: the same step
    step.bind(model, opt, torch.randn(2, 4))
    opt.param_groups[0]["lr"] = 0.01
    with pytest.raises(ExecutionError, match=r"ThresholdSGD's update branches otherwise at this step"):
        step.bind(model, opt, torch.randn(2, 4))


def test_a_fused_optimizer_takes_its_hyper_parameters_as_constants(caplog, monkeypatch):
    """A fused kernel takes the learning rate as a number: traced with its value, the
    step would hold for that value alone (a guard ``lr == 0.01``), so it is captured with
    the hyper-parameters as constants, as the warning says."""
    calls = _counting_traces(monkeypatch)
    model = mlp(4, 2)
    step = capture_step(model, torch.randn(2, 4), optimizer=torch.optim.AdamW(model.parameters(), lr=0.01, fused=True))
    assert calls == [True, False] and not step.hyper_parameters and not step.guards
    [warning] = _retry_warnings(caplog)
    assert "AdamW's update takes its hyper-parameters as numbers" in warning


@pytest.mark.parametrize("mistake", ["input shape", "loss", "batch size"])
def test_user_mistakes_with_an_optimizer_raise_at_once_without_the_retry_warning(mistake, caplog, monkeypatch):
    """A failure before the update is not the hyper-parameters': one trace, no warning."""
    calls = _counting_traces(monkeypatch)
    model = mlp(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, loss_fn = torch.randn(2, 4), None
    if mistake == "input shape":
        x = torch.randn(2, 5)
    elif mistake == "loss":
        loss_fn = lambda out: out  # noqa: E731 - not a scalar
    else:
        x = torch.empty(2**58, 4, device="meta")  # the logits, 2**58 x 10 floats, overflow 64-bit sizes
    with pytest.raises(CaptureError) as raised:
        capture(model, x, optimizer=optimizer, loss_fn=loss_fn)
    assert calls == [True], str(raised.value)
    assert not _retry_warnings(caplog)


COUNTER = torch.zeros((), dtype=torch.long)  # a real tensor the loss below counts calls in


def test_the_trace_leaves_the_real_tensors_it_writes_as_they_were():
    """An op on real tensors alone runs for real in the fake mode: a global counter, or a
    teacher's BatchNorm num_batches_tracked, counted one call at every capture. The step
    itself still writes them, once per call, as eager does."""
    from model_ir.torch import capture_step

    model = mlp(8, 2)
    x = torch.randn(4, 8)
    y = torch.randn(model(x).shape)
    teacher = torch.nn.BatchNorm1d(y.shape[1])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    def loss_fn(out, y):
        COUNTER.add_(1)
        return torch.nn.functional.mse_loss(out, teacher(y))

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    captured = capture_step(model, x, loss_fn=loss_fn, targets=(y,), optimizer=optimizer)
    assert int(COUNTER) == 0
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    captured.run(model, optimizer, x, targets=(y,))
    assert int(COUNTER) == 1 and int(teacher.num_batches_tracked) == 1


def test_torch_frontend_provider():
    model = mlp(8, 2)
    g = load(model, frontend="torch", example_inputs=torch.randn(2, 8), granularity=1)
    assert g == capture(model, torch.randn(2, 8), granularity=1)


def test_the_torch_frontend_given_a_file_says_what_it_reads(tmp_path, capsys):
    """Every command's --frontend offers torch, which captures a model object: given a
    file, it said "needs example_inputs=...", which no command line can pass."""
    from model_ir.cli import main

    path = tmp_path / "g.json"
    path.write_text("{}")
    assert main(["info", str(path), "--frontend", "torch"]) == 2
    err = capsys.readouterr().err
    assert "the torch frontend captures a torch.nn.Module from Python" in err and "model-opt capture" in err


def test_model_ir_does_not_import_torch():
    # (other layers' plugins may import torch; model-ir's own, the torch frontend included, must not)
    code = ("import sys, model_ir, model_ir.builtin_plugins, model_ir.frontends; "
            "assert 'torch' in [f.name for f in model_ir.builtin_plugins.model_opt_frontends()]; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


class WithConstants(torch.nn.Module):
    """A plain tensor attribute and a tensor literal: persistent constants of the step."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.scale = torch.full((4,), 3.0)

    def forward(self, x):
        return self.lin(x) * self.scale + torch.tensor([1.0, 2.0, 3.0, 4.0])


def test_tensor_constants_are_persistent_and_executable():
    from model_ir.testing.live_memory import measure_live_bytes

    model = WithConstants()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = capture_step(model, torch.randn(2, 4), optimizer=opt, granularity=1)
    constants = [b for b in step.graph.buffers if b.kind == "constant"]
    assert len(constants) == 2 and all(b.persistent and b.size == 16 for b in constants)
    tensors = step.bind(model, opt, torch.randn(2, 4))
    assert measure_live_bytes(step, tensors) == list(simulate(step.graph).timeline)


def test_binding_and_order_errors_are_clear():
    from model_ir import ScheduleError
    from model_ir.torch import ExecutionError

    model = mlp(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = capture_step(model, torch.randn(2, 4), optimizer=opt)
    with pytest.raises(ExecutionError, match=r"input 'inputs\[0\]': captured as \(2, 4\) torch.float32, got \(3, 4\)"):
        step.run(model, opt, torch.randn(3, 4))
    with pytest.raises(ExecutionError, match=re.escape("passed as step(*, *), the step was captured for step(*)")):
        step.run(model, opt, (torch.randn(2, 4), torch.randn(2, 4)))
    with pytest.raises(ExecutionError, match="strides"):
        step.run(model, opt, torch.randn(4, 2).t())  # same shape, transposed layout
    backwards = [op.id for op in reversed(step.graph.ops)]
    with pytest.raises(ScheduleError):
        step.run(model, opt, torch.randn(2, 4), order=backwards)
    with pytest.raises(CaptureError, match="granularity"):
        capture(model, torch.randn(2, 4), granularity=0)


@torch.library.custom_op("model_ir_test::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class WithCustomOp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return _twice(self.lin(x))


def test_operator_without_fake_implementation_is_named():
    with pytest.raises(CaptureError, match=r"operator model_ir_test::twice cannot run under fake tensors.*\(forward\)"):
        capture(WithCustomOp(), torch.randn(2, 4), train=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_training_step_without_cuda_is_a_clear_error():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = torch.nn.Linear(4, 4, device="cuda")
    with pytest.raises(CaptureError, match="needs a machine with CUDA"):
        capture(model, TensorSpec((2, 4), device="cuda"))


def test_differentiating_torch_prod_is_warned_of():
    """Eager's backward of torch.prod divides by each factor when none is zero and runs
    the zero-safe formula otherwise; a trace cannot look, so the step always runs the
    zero-safe one: gradients 1e-13 off eager's, said in a warning (eval: nothing to say)."""

    class Product(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.prod(torch.sigmoid(self.lin(x)), 1)

    model, x = Product(), torch.randn(4, 8)
    with pytest.warns(UserWarning, match="the step differentiates torch.prod"):
        capture_step(model, x, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture_step(model, x, train=False)
        plain = mlp(8, 2)
        capture_step(plain, x, optimizer=torch.optim.SGD(plain.parameters(), lr=0.1))
