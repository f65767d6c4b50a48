"""--ctkd (CTKD, spec 1.6): the worked example, the lambda curriculum, where tau applies, training and resuming."""
import copy
import math
import os

import pytest
import torch

import train_student
from assembly.options import parse_configurations, parse_student_options, student_run_name
from distiller_zoo import DKD, KD, Batch, DistillContext, DKDLoss, Outputs
from distiller_zoo.CheckpointKD import CheckpointKD
from distiller_zoo.CTKD import CurriculumTemperature, GlobalTemperature, cosine_lambda, gradient_reversal, \
    linear_lambda
from distiller_zoo.LS import LogitStandardization, standardize
from engine.fit import build_optimizer
from helper.checkpoint import load_checkpoint, save_checkpoint
from helper.logging import read_metrics
from models import build_model
from tests.methods import method_options

Z_S = torch.tensor([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])
Z_T = torch.tensor([[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]])
Y = torch.tensor([1, 2])
BATCH = Batch(None, Y, torch.arange(2))
TAU_INIT = 15.621172


def _ctx(cls, **options):
    return DistillContext(method_options(cls, **options), None, None)


def with_ctkd(cls, method=None, **ctkd_options):
    method = method if method is not None else cls(_ctx(cls))
    return CurriculumTemperature.attach(method, _ctx(CurriculumTemperature, ctkd=True, **ctkd_options))


def test_the_initial_temperature_and_the_kl_of_the_worked_example():
    d = with_ctkd(KD)
    terms = d.loss(Outputs(Z_S), Outputs(Z_T), BATCH, 10)
    assert d.last_tau.item() == pytest.approx(TAU_INIT, abs=1e-5)
    assert terms["kl"].item() == pytest.approx(0.247545, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(0.383944, abs=1e-6)  # the cross-entropy has no temperature
    # tau exists only inside a step: the wrapped method never reads a stale one (nor --kd_T)
    with pytest.raises(RuntimeError, match="set per step"):
        d.inner.T


def test_gradients_of_the_worked_example_and_their_reversal():
    tau = torch.tensor(TAU_INIT, requires_grad=True)
    kd = KD(_ctx(KD))
    kd.temperature = lambda: tau
    kd.kl_term(Z_S, Z_T).backward()
    assert tau.grad.item() == pytest.approx(-0.00039027, abs=2e-8)  # student and teacher softmax and the tau^2
    raw = GlobalTemperature()
    kd.temperature = lambda: raw(1.0)  # lambda 1: the GRL passes the gradient as it is
    kd.kl_term(Z_S, Z_T).backward()
    assert raw.theta.grad.item() == pytest.approx(-0.0015346, abs=1e-7)
    d = with_ctkd(KD)
    d.loss(Outputs(Z_S), Outputs(Z_T), BATCH, 10)["kl"].backward()  # epoch 10: lambda -1
    assert d.global_temperature.theta.grad.item() == pytest.approx(+0.0015346, abs=1e-7)


def test_the_gradient_reversal_is_the_identity_forward_and_scales_by_lambda_backward():
    x = torch.tensor(0.7, requires_grad=True)
    y = gradient_reversal(x, -0.25)
    assert y.item() == pytest.approx(0.7)
    (3.0 * y).backward()
    assert x.grad.item() == pytest.approx(-0.75)  # no extra minus: lambda itself is negative


SPEC_LAMBDAS = {1: -0.024472, 2: -0.095492, 3: -0.206107, 4: -0.345492, 5: -0.5, 9: -0.975528, 10: -1.0,
                11: -1.0, 240: -1.0}


@pytest.mark.parametrize("epoch,expected", sorted(SPEC_LAMBDAS.items()))
def test_the_cosine_curriculum_of_the_scripts(epoch, expected):
    d = with_ctkd(KD)  # the defaults are the scripts' --decay_max 0 --decay_min -1 --decay_loops 10
    assert d.grl_lambda(epoch) == pytest.approx(expected, abs=1e-6)
    # the compiled step passes the epoch as a float32 0-d tensor: the same values
    on_device = d.grl_lambda(torch.tensor(float(epoch)))
    assert isinstance(on_device, torch.Tensor) and on_device.item() == pytest.approx(expected, abs=1e-6)


def test_the_linear_curriculum_reaches_its_minimum_at_the_last_loop():
    d = with_ctkd(KD, cosine_decay=0)
    assert [round(d.grl_lambda(e), 6) for e in (1, 5, 9, 10, 20)] == [-0.1, -0.5, -0.9, -1.0, -1.0]
    # the reference's LinearDecay stopped at -0.9 and ignored decay_max as an offset (spec 1.6, bug 3)
    assert linear_lambda(10, 4, 0.5, -1.5) == -1.5 and linear_lambda(0, 4, 0.5, -1.5) == 0.5
    assert linear_lambda(torch.tensor(2.0), 4, 0.0, -1.0).item() == pytest.approx(-0.5)
    assert cosine_lambda(0, 4, 0.5, -1.5) == pytest.approx(0.5)


def test_a_schedule_that_would_divide_by_zero_is_refused():
    with pytest.raises(ValueError, match="--decay_loops must be a positive number of epochs, got 0"):
        with_ctkd(KD, decay_loops=0)


def test_dkd_softens_with_tau_and_is_unchanged_without_ctkd():
    plain = DKD(_ctx(DKD, dkd_warmup=0))
    assert plain.T == 4.0 and isinstance(plain.T, float)
    expected_t4 = DKDLoss(1.0, 8.0, 4.0, 0)(Z_S, Z_T, Y)
    assert plain.method_loss(Outputs(Z_S), Outputs(Z_T), BATCH, 1).item() == expected_t4.item()  # bit for bit
    assert expected_t4.item() == pytest.approx(1.482614, abs=1e-5)  # the spec's DKD recap
    d = with_ctkd(DKD, method=DKD(_ctx(DKD, dkd_warmup=0)))
    terms = d.loss(Outputs(Z_S), Outputs(Z_T), BATCH, 10)
    # DKD's sums cancel to a small KL, so float32 rounding shows at 1e-5: the reference is float64
    expected = DKDLoss(1.0, 8.0, float(d.last_tau), 0)(Z_S.double(), Z_T.double(), Y)
    assert terms["kd"].item() == pytest.approx(expected.item(), rel=5e-5)
    assert expected.item() != pytest.approx(expected_t4.item(), rel=1e-2)  # tau, not --kd_T
    terms["kd"].backward()
    grad = d.global_temperature.theta.grad
    # finite: the masked target class has teacher probability exactly 0, where F.kl_div's target gradient is NaN
    assert grad is not None and math.isfinite(grad.item()) and grad.item() != 0.0
    # that gradient is the one of the KL's formula, checked by a finite difference in tau (float64)
    tau = torch.tensor(TAU_INIT, dtype=torch.float64, requires_grad=True)
    z_s, z_t = Z_S.double(), Z_T.double()
    DKDLoss(1.0, 8.0, 4.0, 0)(z_s, z_t, Y, T=tau).backward()
    h = 1e-4
    at = [DKDLoss(1.0, 8.0, TAU_INIT + step, 0)(z_s, z_t, Y) for step in (h, -h)]
    numeric = (at[0] - at[1]) / (2 * h)
    assert tau.grad.item() == pytest.approx(numeric.item(), rel=1e-5)


def test_checkpointkd_teacher_scale_reads_tau_too():
    d = with_ctkd(CheckpointKD, method=CheckpointKD(_ctx(CheckpointKD, teacher_scale=True)))
    kl = d.loss(Outputs(Z_S), Outputs(Z_T), BATCH, 10)["kl"]
    p_s = torch.log_softmax(Z_S, 1)
    p_t = torch.softmax(Z_T / TAU_INIT, 1)
    expected = (p_t * (p_t.log() - p_s)).sum() * TAU_INIT / 2
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ls_then_ctkd_softens_the_standardised_logits_with_tau():
    d = with_ctkd(KD, method=LogitStandardization.attach(KD(_ctx(KD, kd_T=2.0)), None))
    kl = d.loss(Outputs(Z_S), Outputs(Z_T), BATCH, 10)["kl"]
    zs, zt = standardize(Z_S), standardize(Z_T)
    p_s, p_t = torch.log_softmax(zs / TAU_INIT, 1), torch.softmax(zt / TAU_INIT, 1)
    expected = (p_t * (p_t.log() - p_s)).sum() * TAU_INIT ** 2 / 2
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl.item() != pytest.approx(0.247545, abs=1e-4)  # not the raw-logit value: LS's map applied first


def test_theta_trains_with_the_student_and_is_saved():
    opt = parse_student_options(["--distill", "kd", "--ctkd", "--device", "cpu"])
    student = build_model("resnet8", num_classes=10)
    d = with_ctkd(KD)
    sgd = build_optimizer(student, d, opt, torch.device("cpu"))
    params = [p for g in sgd.param_groups for p in g["params"]]
    assert any(p is d.global_temperature.theta for p in params)
    assert len(params) == len(list(student.parameters())) + 1
    assert sgd.param_groups[0]["weight_decay"] == opt.weight_decay == 5e-4  # on theta too, as in CTKD
    assert list(d.state_dict()) == ["global_temperature.theta"]
    assert d.state_dict()["global_temperature.theta"].item() == 1.0
    # one SGD step with a zero loss gradient: weight decay alone moves theta (the momentum buffer is fresh)
    sgd.zero_grad()
    (0.0 * d.global_temperature.theta).backward()
    sgd.step()
    assert d.global_temperature.theta.item() == pytest.approx(1.0 - opt.learning_rate * 5e-4, abs=1e-7)
    assert d.global_temperature.theta.item() != 1.0
    restored = with_ctkd(KD)
    restored.load_state_dict(d.state_dict())
    assert restored.global_temperature.theta.item() == d.global_temperature.theta.item()


@pytest.mark.parametrize("method", ["crd", "kdrefine"])
def test_methods_without_a_temperature_are_refused(method):
    with pytest.raises(SystemExit, match=f"--ctkd learns the temperature .*--distill {method} has no such term"):
        parse_configurations(["--distill", method, "--ctkd"])


def test_dkd_runs_without_its_warm_up_unless_a_flag_says_otherwise():
    [c] = parse_configurations(["--distill", "dkd", "--ctkd"])
    assert c.options.dkd_warmup == 0 and c.sources["dkd_warmup"].startswith("--ctkd")
    assert parse_student_options(["--distill", "dkd"]).dkd_warmup == 20
    assert parse_student_options(["--distill", "dkd", "--ctkd", "--dkd_warmup", "5"]).dkd_warmup == 5
    opt = parse_student_options(["--distill", "kd", "--ctkd"])
    assert (opt.t_start, opt.t_end, opt.cosine_decay, opt.decay_max, opt.decay_min, opt.decay_loops) == \
        (1.0, 20.0, 1, 0.0, -1.0, 10)
    assert (opt.gamma, opt.alpha, opt.beta) == (0.1, 0.9, 0.0)  # the CIFAR KD+CTKD script's weights


def test_the_wrapped_method_keeps_its_name_and_features():
    d = with_ctkd(DKD, method=DKD(_ctx(DKD)))
    assert (d.name, d.student_features, d.teacher_features, d.needs_teacher) == ("dkd", None, None, True)
    assert CurriculumTemperature.name == "ctkd" and CurriculumTemperature.flag == "--ctkd"


def test_run_folders_name_the_add_on_and_ls_mc_compose_in_order():
    opt = parse_student_options(["--logit_stand", "--ctkd", "--mc", "1"])
    assert student_run_name(opt, "resnet8").split("_cifar100_")[1].startswith("kd_ls_ctkd_mc_")


def ctkd_run(data_root, save_dir, path_t, epochs, *extra):
    return train_student.main(["--path_t", path_t, "--distill", "kd", "--ctkd", "--model_s", "resnet8",
                               "--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir),
                               "--epochs", str(epochs), "--batch_size", "64", "--device", "cpu",
                               "--save_freq", "1", "--decay_loops", "2", *extra])


def test_kd_with_ctkd_trains_logs_tau_and_resumes_exactly(tiny_cifar, tmp_path):
    path_t = str(tmp_path / "resnet8_vanilla" / "ckpt_epoch_1.pth")
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path_t)
    full = ctkd_run(tiny_cifar, tmp_path / "full", path_t, 2)
    assert os.path.basename(full["run_dir"]) == "S_resnet8_T_resnet8_cifar100_kd_ctkd_r_0.1_a_0.9_b_0.0_1"
    rows = [r for r in read_metrics(full["run_dir"]) if r.get("stage", "train") == "train"]
    assert [r["epoch"] for r in rows] == [1, 2]
    taus = [r["ctkd_tau"] for r in rows]
    assert all(1.0 < t < 21.0 for t in taus) and taus[0] != taus[1] and not math.isclose(taus[0], TAU_INIT)
    ctkd_run(tiny_cifar, tmp_path / "cut", path_t, 1)
    cut = ctkd_run(tiny_cifar, tmp_path / "cut", path_t, 2, "--resume", "auto")
    a = load_checkpoint(os.path.join(full["run_dir"], "resnet8_last.pth"))
    b = load_checkpoint(os.path.join(cut["run_dir"], "resnet8_last.pth"))
    assert a["epoch"] == b["epoch"] == 2 and a["opt"]["ctkd"] is True
    assert list(a["distiller"]) == ["global_temperature.theta"]
    assert torch.equal(a["distiller"]["global_temperature.theta"], b["distiller"]["global_temperature.theta"])
    assert a["distiller"]["global_temperature.theta"].item() != 1.0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    resumed = [r for r in read_metrics(cut["run_dir"]) if r.get("stage", "train") == "train"]
    assert [r["ctkd_tau"] for r in resumed] == taus


def test_the_compiled_step_reads_lambda_from_the_epoch_tensor_and_matches_eager(monkeypatch):
    import engine.compile as compile_module
    from engine.compile import compile_step
    from engine.forward import forward
    from engine.step import StudentStep, loss_weights, optimize
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compile_module, "COMPILE_BACKEND", "aot_eager")  # dynamo's capture, no code generation
    torch._dynamo.reset()
    cpu = torch.device("cpu")
    opt = parse_student_options(["--distill", "dkd", "--ctkd", "--device", "cpu", "--compile", "--batch_size", "8",
                                 "--model_s", "resnet8"])
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10)
    teacher = build_model("resnet8", num_classes=10).eval()
    built = [with_ctkd(DKD, method=DKD(_ctx(DKD, dkd_warmup=0))) for _ in range(2)]
    steps = [StudentStep(student, built[0]), StudentStep(copy.deepcopy(student), built[1])]
    compile_step(steps[1], opt, cpu)
    sgds = [build_optimizer(s.student, s.distiller, opt, cpu) for s in steps]
    w = loss_weights(opt)
    counters.clear()
    try:
        for epoch in (1, 3, 12):  # lambda changes with the epoch; one graph serves them all
            g = torch.Generator().manual_seed(epoch)
            b = Batch(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g),
                      torch.arange(8))
            with torch.no_grad():
                out_t = forward(teacher, b.x)
            results = [optimize(s, sgd, b.x, out_t, b, epoch, w, opt, cpu) for s, sgd in zip(steps, sgds)]
            torch.testing.assert_close(results[1][1]["kd"], results[0][1]["kd"], rtol=1e-5, atol=1e-6)
            thetas = [d.global_temperature.theta for d in built]
            torch.testing.assert_close(thetas[1], thetas[0], rtol=1e-6, atol=1e-7)
            assert built[1].epoch_metrics()["ctkd_tau"] == pytest.approx(built[0].epoch_metrics()["ctkd_tau"],
                                                                         rel=1e-6)
        assert counters["stats"]["unique_graphs"] == 1
        theta = built[0].global_temperature.theta.item()
        assert math.isfinite(theta) and theta != 1.0
    finally:
        torch._dynamo.reset()


def test_dkds_nan_free_kl_for_a_tensor_temperature_has_f_kl_divs_value():
    g = torch.Generator().manual_seed(3)
    z_s, z_t = torch.randn(16, 10, generator=g) * 5, torch.randn(16, 10, generator=g) * 5
    y = torch.randint(0, 10, (16,), generator=g)
    dkd = DKDLoss(1.0, 8.0, 4.0, 0)
    # T = 4 divides exactly either way, so the two forms of the KL meet bit for bit
    assert dkd.nckd(z_s, z_t, y, torch.tensor(4.0)).item() == dkd.nckd(z_s, z_t, y).item()
