"""engine/dot.py's DOT optimizer against the spec's worked example (modern_methods.md §1.8), and the step's split."""
import copy

import pytest
import torch
import torch.nn as nn

from engine.dot import DOT
from engine.fit import build_optimizer, load_optimizer_state
from engine.step import optimize, split_task_loss

LR, DELTA, WD = 0.1, 0.075, 5e-4


def scalar():
    return nn.Parameter(torch.tensor([1.0], dtype=torch.float64))


def dot_step(opt: DOT, p, g_task=None, g_kd=None):
    """One DOT step with given gradients, in the order the training step produces them."""
    opt.zero_grad(set_to_none=True)
    if g_kd is not None:
        p.grad = torch.tensor([g_kd], dtype=p.dtype)
        opt.record_kd_grads()
        opt.zero_grad(set_to_none=True)
    if g_task is not None:
        p.grad = torch.tensor([g_task], dtype=p.dtype)
    opt.step()
    return p.item()


def test_worked_example_with_both_gradients():
    p = scalar()
    opt = DOT([p], lr=LR, momentum=0.9, delta=DELTA, weight_decay=WD)
    assert dot_step(opt, p, 1.0, 2.0) == pytest.approx(0.69995, abs=1e-12)
    state = opt.state[p]
    assert state["momentum_buffer"].item() == pytest.approx(1.0005, abs=1e-12)
    assert state["momentum_kd_buffer"].item() == pytest.approx(2.0, abs=1e-12)
    theta2 = dot_step(opt, p, 0.5, -1.0)
    assert state["momentum_buffer"].item() == pytest.approx(1.3257625, abs=5e-8)
    assert state["momentum_kd_buffer"].item() == pytest.approx(0.95, abs=1e-12)
    assert theta2 == pytest.approx(0.4723738, abs=5e-8)
    # not plain SGD with momentum 0.9 on the summed gradients
    assert abs(theta2 - 0.4798700) > 1e-3


def test_task_only_parameter_is_sgd_with_momentum_m():
    p = scalar()
    opt = DOT([p], lr=LR, momentum=0.9, delta=DELTA, weight_decay=WD)
    assert dot_step(opt, p, g_task=1.0) == pytest.approx(0.89995, abs=1e-12)
    assert dot_step(opt, p, g_task=1.0) == pytest.approx(0.70986, abs=1e-8)
    assert "momentum_kd_buffer" not in opt.state[p]


def test_kd_only_parameter_gets_weight_decay_from_the_first_step():
    # The reference skips weight decay on a KD-only parameter's first step (spec: 0.9 then 0.709955). With the
    # FIX it decays every step, so by hand: b1 = 1 + 5e-4*1 = 1.0005, theta1 = 1 - 0.1*1.0005 = 0.89995;
    # b2 = 0.9*1.0005 + 1 + 5e-4*0.89995 = 1.900899975, theta2 = 0.89995 - 0.1900899975 = 0.7098600025,
    # the task-only parameter's numbers.
    p = scalar()
    opt = DOT([p], lr=LR, momentum=0.9, delta=DELTA, weight_decay=WD)
    assert dot_step(opt, p, g_kd=1.0) == pytest.approx(0.89995, abs=1e-12)
    assert opt.state[p]["momentum_kd_buffer"].item() == pytest.approx(1.0005, abs=1e-12)
    assert dot_step(opt, p, g_kd=1.0) == pytest.approx(0.7098600025, abs=1e-12)
    assert "momentum_buffer" not in opt.state[p]
    assert abs(p.item() - 0.709955) > 5e-5  # not the reference's unfixed value


def test_task_only_matches_torch_sgd_bit_for_bit():
    torch.manual_seed(0)
    a = nn.Linear(7, 5)
    b = nn.Linear(7, 5)
    b.load_state_dict(a.state_dict())
    sgd = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    dot = DOT(b.parameters(), lr=0.05, momentum=0.9, delta=DELTA, weight_decay=5e-4)
    x = torch.randn(4, 7)
    for _ in range(3):
        for net, o in ((a, sgd), (b, dot)):
            o.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_record_moves_the_gradients_off_so_an_in_place_zero_grad_cannot_erase_them():
    p, q = scalar(), scalar()
    opt = DOT([p], lr=LR, momentum=0.9, delta=DELTA, weight_decay=WD)
    ref = DOT([q], lr=LR, momentum=0.9, delta=DELTA, weight_decay=WD)
    p.grad = torch.tensor([2.0], dtype=p.dtype)
    opt.record_kd_grads()
    assert p.grad is None
    opt.zero_grad(set_to_none=False)
    p.grad = torch.tensor([1.0], dtype=p.dtype)
    opt.step()
    assert p.item() == dot_step(ref, q, 1.0, 2.0) == pytest.approx(0.69995, abs=1e-12)


def test_one_param_group_only():
    with pytest.raises(ValueError, match="one param group"):
        DOT([{"params": [scalar()]}, {"params": [scalar()]}], lr=LR)
    with pytest.raises(ValueError, match="delta"):
        DOT([scalar()], lr=LR, momentum=0.9, delta=0.95)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(1)
    net = nn.Linear(3, 2)
    x = torch.randn(5, 3)

    def step(n, o):
        o.zero_grad(set_to_none=True)
        n(x).pow(3).mean().backward(retain_graph=False)
        o.record_kd_grads()
        n(x).square().mean().backward()
        o.step()

    opt = DOT(net.parameters(), lr=0.05, momentum=0.9, delta=DELTA, weight_decay=5e-4)
    step(net, opt)
    saved = copy.deepcopy(opt.state_dict())  # a checkpoint's copy, not the live buffers
    assert {k for s in saved["state"].values() for k in s} == {"momentum_buffer", "momentum_kd_buffer"}
    assert saved["param_groups"][0]["delta"] == DELTA
    twin = nn.Linear(3, 2)
    twin.load_state_dict(net.state_dict())
    opt2 = DOT(twin.parameters(), lr=0.05, momentum=0.9, delta=DELTA, weight_decay=5e-4)
    opt2.load_state_dict(saved)
    step(net, opt)
    step(twin, opt2)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


class Opts:
    optimizer = "sgd"
    learning_rate = 0.05
    momentum = 0.9
    weight_decay = 5e-4
    nesterov = False
    dot_delta = DELTA
    amp = False


class NoDistiller(nn.Module):
    def trainable_modules(self):
        return []


def test_build_optimizer_picks_from_opt_optimizer_and_resume_refuses_the_other():
    net = nn.Linear(3, 2)
    sgd = build_optimizer(net, NoDistiller(), Opts, torch.device("cpu"))
    assert type(sgd) is torch.optim.SGD
    dot_opts = type("DotOpts", (Opts,), {"optimizer": "dot"})
    dot = build_optimizer(net, NoDistiller(), dot_opts, torch.device("cpu"))
    assert isinstance(dot, DOT) and dot.param_groups[0]["delta"] == DELTA
    with pytest.raises(ValueError, match="written with --optimizer dot"):
        load_optimizer_state(sgd, dot.state_dict())
    with pytest.raises(ValueError, match="written with --optimizer sgd"):
        load_optimizer_state(dot, sgd.state_dict())
    load_optimizer_state(dot, dot.state_dict())


class TwoTermStep(nn.Module):
    """A step whose task and distillation terms reach different parameters (one shared)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Parameter(torch.tensor(1.0))
        self.task_only = nn.Parameter(torch.tensor(1.0))
        self.kd_only = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, out_t, batch, epoch, weights):
        terms = {"ce": self.shared * 1.0 + self.task_only, "kl": 2.0 * self.shared + self.kd_only}
        loss = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        return loss, terms, x


def test_optimize_splits_the_weighted_loss_into_task_and_distillation_backwards():
    step = TwoTermStep()
    opt = DOT(step.parameters(), lr=LR, momentum=0.9, delta=DELTA, weight_decay=0.0)
    weights = {"ce": 0.5, "kl": 1.5}
    loss, terms, _ = optimize(step, opt, torch.zeros(1), None, None, 1, weights, Opts, torch.device("cpu"))
    assert loss.item() == pytest.approx(0.5 * 2.0 + 1.5 * 3.0)
    assert set(terms) == {"ce", "kl"}
    # shared: task grad 0.5, kd grad 3.0 -> 1 - 0.1*(0.5 + 3.0); task-only 0.5; kd-only 1.5
    assert step.shared.item() == pytest.approx(1 - 0.35)
    assert step.task_only.item() == pytest.approx(1 - 0.05)
    assert step.kd_only.item() == pytest.approx(1 - 0.15)
    assert opt.state[step.shared]["momentum_kd_buffer"].item() == pytest.approx(3.0)
    assert opt.state[step.shared]["momentum_buffer"].item() == pytest.approx(0.5)


def test_split_needs_the_cross_entropy_term():
    task, rest = split_task_loss({"ce": torch.tensor(2.0)}, {"ce": 0.1})
    assert task.item() == pytest.approx(0.2) and rest is None
    with pytest.raises(ValueError, match="--optimizer dot needs the method's cross-entropy term"):
        split_task_loss({"kl": torch.tensor(1.0)}, {})


def test_compiled_step_trains_with_dot_as_the_eager_one(monkeypatch):
    """--compile: the compiled step's terms take both backwards (retain_graph) like the eager step's."""
    import engine.compile as compile_module
    from distiller_zoo.base import Batch
    from engine.compile import compile_step
    from engine.forward import forward
    from engine.step import StudentStep, loss_weights
    from tests.engine.test_compile_step import kd_like, options

    monkeypatch.setattr(compile_module, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    try:
        opt, student, teacher, distiller = kd_like("kd")
        dot_opts = options(optimizer="dot")
        student_c, distiller_c = copy.deepcopy((student, distiller))
        eager, compiled = StudentStep(student, distiller), StudentStep(student_c, distiller_c)
        compile_step(compiled, dot_opts, torch.device("cpu"))
        assert compiled.compiled is not None
        cpu = torch.device("cpu")
        o, o_c = build_optimizer(student, distiller, dot_opts, cpu), build_optimizer(student_c, distiller_c,
                                                                                      dot_opts, cpu)
        assert isinstance(o, DOT) and isinstance(o_c, DOT)
        w = loss_weights(dot_opts)
        for i in range(2):
            g = torch.Generator().manual_seed(i)
            b = Batch(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g),
                      torch.arange(8))
            with torch.no_grad():
                out_t = forward(teacher, b.x)
            loss, _, _ = optimize(eager, o, b.x, out_t, b, 1, w, dot_opts, cpu)
            loss_c, _, _ = optimize(compiled, o_c, b.x, out_t, b, 1, w, dot_opts, cpu)
            torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
        assert all("momentum_kd_buffer" in o_c.state[p] for p in student_c.parameters())
        for p, p_c in zip(student.parameters(), student_c.parameters()):
            torch.testing.assert_close(p_c, p, rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()


def test_cuda_graphs_are_refused_with_dot(monkeypatch):
    import engine.fit as fit
    from engine.step import StudentRun

    monkeypatch.setattr(fit, "uses_cuda_graphs", lambda opt, device: True)
    dot_opts = type("DotOpts", (Opts,), {"optimizer": "dot", "sync_bn": False, "lr_scale": "none"})
    net = nn.Linear(3, 2)
    run = StudentRun(dot_opts, net, NoDistiller(), run_dir="never-made")
    with pytest.raises(ValueError, match="--optimizer dot does not run under CUDA graphs"):
        fit.prepare_run(run, dot_opts, None, torch.device("cpu"), None)
