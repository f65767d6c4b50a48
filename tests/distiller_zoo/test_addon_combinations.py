"""Every method x add-on combination: the ones the papers compose train a step, every other one is refused at
parse time with the reason (issue #12's combination matrix)."""
from types import SimpleNamespace

import pytest
import torch

from assembly.options import parse_configurations, parse_student_options
from assembly.student import build_student_side
from distiller_zoo import REGISTRY, Batch
from distiller_zoo.CTKD import CurriculumTemperature
from distiller_zoo.LS import standardize
from engine.forward import teacher_outputs
from engine.step import StudentStep, loss_weights
from engine.teacher import Teacher
from models import build_model

METHODS = sorted(n for n in REGISTRY if n != "ce")
# what the papers compose: LS with every method that softens logits with a temperature (LS CVPR'24: KD, DKD, MLKD,
# and CheckpointKD's KD), CTKD with the ones that soften with one temperature
LOGIT_STAND = {"kd", "checkpointkd", "dkd", "mlkd"}
CTKD = {"kd", "checkpointkd", "dkd"}
ALLOWED = ([(m, ("--logit_stand",)) for m in sorted(LOGIT_STAND)] + [(m, ("--ctkd",)) for m in sorted(CTKD)]
           + [(m, ("--logit_stand", "--ctkd")) for m in sorted(CTKD)]
           + [(m, ("--optimizer", "dot")) for m in sorted(LOGIT_STAND)]
           + [("mlkd", ("--mc", "1")), ("dkd", ("--logit_stand", "--mc", "1"))])


@pytest.mark.parametrize("method", METHODS)
def test_logit_stand_serves_exactly_the_softening_methods(method):
    if method in LOGIT_STAND:
        assert parse_student_options(["--distill", method, "--logit_stand"]).logit_stand is True
    else:
        with pytest.raises(SystemExit, match=f"--logit_stand standardises .*; --distill {method} has no such term"):
            parse_configurations(["--distill", method, "--logit_stand"])


@pytest.mark.parametrize("method", METHODS)
def test_ctkd_serves_exactly_the_one_temperature_methods(method):
    if method in CTKD:
        assert parse_student_options(["--distill", method, "--ctkd", "--logit_stand"]).ctkd is True
    else:
        with pytest.raises(SystemExit, match=f"--ctkd learns .*; --distill {method} (has no such term|softens at)"):
            parse_configurations(["--distill", method, "--ctkd"])


@pytest.mark.parametrize("method", METHODS)
def test_dot_and_milestone_checking_apply_to_every_method_at_parse_time(method):
    opt = parse_student_options(["--distill", method, "--optimizer", "dot", "--mc", "1"])
    assert (opt.optimizer, opt.mc) == ("dot", 1)


def build(method, flags):
    opt = parse_student_options(["--distill", method, "--model_s", "resnet8", "--device", "cpu", *flags])
    data = SimpleNamespace(num_classes=10, train=SimpleNamespace(images=torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
                                                                 targets=torch.arange(4), input_shape=(3, 32, 32)))
    torch.manual_seed(1)
    teacher = Teacher([build_model("resnet8", num_classes=10)])
    student, distiller = build_student_side(opt, data, torch.device("cpu"), teacher)
    return opt, student, distiller, teacher


@pytest.mark.parametrize("method,flags", ALLOWED, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_allowed_combinations_build_and_train_a_step(method, flags):
    opt, student, distiller, teacher = build(method, flags)
    teacher.begin_epoch(1, 1)
    g = torch.Generator().manual_seed(0)
    x, strong = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    batch = Batch(x, torch.tensor([0, 1, 2, 3]), torch.arange(4), x_strong=strong if distiller.strong_view else None)
    out_t = teacher_outputs(teacher, x, {distiller.teacher_features})[distiller.teacher_features]
    if distiller.strong_view:
        out_t.strong = teacher_outputs(teacher, strong, {distiller.teacher_features})[distiller.teacher_features]
    loss, terms, _ = StudentStep(student, distiller).loss_and_logits(x, out_t, batch, 25, loss_weights(opt))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in student.parameters() if p.requires_grad)
    wrapped = distiller
    while hasattr(wrapped, "inner"):
        wrapped = wrapped.inner
    assert wrapped.name == method
    assert (wrapped.logit_transform is standardize) == ("--logit_stand" in flags)
    ctkd = [d for d in (distiller, getattr(distiller, "inner", None)) if isinstance(d, CurriculumTemperature)]
    assert bool(ctkd) == ("--ctkd" in flags)
    if ctkd:
        theta = ctkd[0].global_temperature.theta
        assert theta.grad is not None and theta.grad.item() != 0.0


def test_dot_turns_off_a_methods_nesterov_default_but_refuses_the_flag():
    [c] = parse_configurations(["--distill", "checkpointkd", "--optimizer", "dot"])
    assert c.options.nesterov is False and c.sources["nesterov"] == "--optimizer dot (no Nesterov variant)"
    assert parse_student_options(["--distill", "checkpointkd"]).nesterov is True
    with pytest.raises(SystemExit, match="--optimizer dot has no Nesterov variant; drop --nesterov"):
        parse_configurations(["--distill", "checkpointkd", "--optimizer", "dot", "--nesterov", "1"])
