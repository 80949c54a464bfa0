"""CUDA-graph replay (``optimize(..., cuda_graph=True)``): what can be checked on the CPU.

The recording itself needs a GPU (``-m gpu`` tests in test_runtime_gpu.py); here a
stand-in recorder that replays by running the recorded function checks the logic
around it: the batch copied into the graph's inputs, recording again when a
hyper-parameter changes or a state tensor is replaced, outputs not overwritten by
the next replay, and the refusals.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from model_ir.testing.torch_models import assert_same_state, eager_step, mlp  # noqa: E402
from model_runtime import RuntimeLayerError, optimize  # noqa: E402
from model_runtime.cuda_graphs import GraphedRun, graph_blockers  # noqa: E402


class ReplayByRunning:
    """A stand-in for CUDA's recorder: recording runs the step once and undoes it (every
    input tensor and the generator restored) to hand out outputs of the right shapes; a
    replay runs the step and copies its results into those outputs, as a graph's
    static outputs."""

    def __init__(self):
        self.fn = None
        self.outputs: list = []
        self.warm_ups = 0

    def warm_up(self, fn):
        self.warm_ups += 1
        return fn()

    def record(self, fn, tensors):
        saved = [t.clone() for t in tensors]
        rng = torch.get_rng_state()
        self.outputs = [o.clone() if isinstance(o, torch.Tensor) else o for o in fn()]
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        torch.set_rng_state(rng)
        self.fn = fn
        return self.outputs

    def replay(self):
        for static, new in zip(self.outputs, self.fn()):
            if isinstance(static, torch.Tensor):
                static.copy_(new)


def _graphed(executor="arena", momentum=0.9, **kw):
    torch.manual_seed(0)
    model = mlp(16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    ref, ref_opt = copy.deepcopy((model, opt))
    step = optimize(model, torch.randn(8, 16), optimizer=opt, executor=executor, time_limit=0.5, **kw)
    recorder = ReplayByRunning()
    step.graphed = GraphedRun(step.program, step.binder, recorder)
    step._run = step.graphed.run
    return model, opt, ref, ref_opt, step, recorder


@pytest.mark.parametrize("executor", ["arena", "reorder"])
def test_replays_are_eager_steps_on_new_batches_and_record_again_when_lr_changes(executor):
    model, opt, ref, ref_opt, step, recorder = _graphed(executor)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=3, gamma=0.5)
    losses, want = [], []
    for i in range(7):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(i))
        losses.append(step(x))
        want.append(eager_step(ref, ref_opt, (x,)))
        sched.step()
        ref_sched.step()
    # An earlier step's loss is not overwritten by later replays.
    assert [float(a) for a in losses] == [float(b) for b in want]
    assert_same_state(model, opt, ref, ref_opt)
    # Call 1 warms up, call 2 records; lr halves before calls 4 and 7: recorded again then.
    assert recorder.warm_ups == 1 and step.graphed.recordings == 3
    assert step.figures()["cuda_graph_recordings"] == 3 and "CUDA graph" in step.report()


def test_replaced_state_tensor_records_again():
    model, opt, ref, ref_opt, step, _ = _graphed()
    x = torch.randn(8, 16)
    for _ in range(3):
        step(x)
        eager_step(ref, ref_opt, (x,))
    assert step.graphed.recordings == 1
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new momentum buffers, same values
    ref_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    assert float(step(x)) == float(eager_step(ref, ref_opt, (x,)))
    assert step.graphed.recordings == 2
    assert_same_state(model, opt, ref, ref_opt)


def test_outputs_and_gradients_are_the_callers_and_accumulation_replays():
    model, opt, ref, ref_opt, step, _ = _graphed(return_outputs=True, set_grads=True)
    kept = []
    for i in range(4):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(i))
        loss, out = step(x)
        ref_opt.zero_grad(set_to_none=True)
        want_out = ref(x)
        want = want_out.sum()
        want.backward()
        ref_opt.step()
        assert torch.equal(loss, want.detach()) and torch.equal(out, want_out.detach())
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            assert torch.equal(p.grad, q.grad), name
        kept.append((out, [p.grad for p in model.parameters()]))
    # What a call returned is not overwritten by later replays.
    assert not torch.equal(kept[0][0], kept[-1][0]) and not torch.equal(kept[0][1][0], kept[-1][1][0])
    assert step.graphed.recordings == 1

    torch.manual_seed(0)
    model, opt = mlp(16, 3), None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref, ref_opt = copy.deepcopy((model, opt))
    step = optimize(model, torch.randn(4, 16), optimizer=opt, accumulation_steps=2, time_limit=0.5)
    step.graphed = GraphedRun(step.program, step.binder, ReplayByRunning())
    step._run = step.graphed.run
    for i in range(3):
        xs = [torch.randn(4, 16, generator=torch.Generator().manual_seed(10 * i + k)) for k in range(2)]
        losses = step.accumulate(xs)
        ref_opt.zero_grad(set_to_none=True)
        want = []
        for x in xs:
            loss = ref(x).sum()
            loss.backward()
            want.append(loss.detach())
        ref_opt.step()
        assert [float(a) for a in losses] == [float(b) for b in want]
    assert_same_state(model, opt, ref, ref_opt, stateful=False)
    assert step.graphed.recordings == 1


def test_cpu_model_is_refused_before_planning():
    model = mlp(16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeLayerError, match="need a model on a CUDA device; this one is on cpu"):
        optimize(model, torch.randn(8, 16), optimizer=opt, cuda_graph=True, time_limit=0.5)


def test_blockers_name_the_device_and_host_tensors():
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = optimize(model, torch.randn(3, 4), optimizer=opt, time_limit=0.5)
    assert graph_blockers(step.binder, step.program, torch.device("cpu")) == [
        "CUDA graphs need a model on a CUDA device; this one is on cpu"]
    # Captured on the CPU, every tensor the step reads is a host tensor for a CUDA graph;
    # the hyper-parameters are host scalars by design (the key of a recording).
    found = graph_blockers(step.binder, step.program, torch.device("cuda"))
    assert any("parameter 'weight' is a cpu tensor" in b for b in found)
    assert not any("lr" in b for b in found)
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    step = optimize(model, torch.randn(3, 4), optimizer=adam, time_limit=0.5)
    found = graph_blockers(step.binder, step.program, torch.device("cuda"))
    assert any("weight/step" in b and "capturable=True" in b for b in found)
