"""MLKD (spec 1.7): the worked example term by term, the confidence fractions, the two views through the engine,
its per-pair presets and recipes, and a CLI epoch."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from assembly.options import parse_configurations, parse_student_options, student_run_name
from dataset.core import TensorImageSet
from distiller_zoo import Batch, DistillContext, Outputs
from distiller_zoo.LS import LogitStandardization, standardize
from distiller_zoo.MLKD import (MLKD, at_most_median_fraction, batch_correlation, class_correlation,
                                confidence_fractions, mlkd_kd_terms, mlkd_relation_terms)
from distiller_zoo.base import kd_kl
from engine.step import StudentStep
from helper.logging import read_metrics
from models import build_model
from tests.methods import distill_one_epoch, method_options

# spec 1.7's worked example: the common inputs (weak view) and its strong-view logits
S_WEAK = torch.tensor([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])
T_WEAK = torch.tensor([[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]])
S_STRONG = torch.tensor([[0.5, 1.5, 1.0], [0.0, -0.5, 1.0]])
T_STRONG = torch.tensor([[1.5, 1.2, 0.3], [0.4, -0.2, 1.8]])
Y = torch.tensor([1, 2])
TEMPERATURES = (4.0, 3.0, 5.0, 2.0, 6.0)


def method(**options):
    return MLKD(DistillContext(method_options(MLKD, **options), None, None))


def outputs():
    return (Outputs(S_WEAK, strong=Outputs(S_STRONG)), Outputs(T_WEAK, strong=Outputs(T_STRONG)),
            Batch(None, Y, torch.arange(2)))


def test_single_terms_at_t4():
    p_s, p_t = F.softmax(S_WEAK / 4, dim=1), F.softmax(T_WEAK / 4, dim=1)
    assert kd_kl(S_WEAK, T_WEAK, 4.0).item() == pytest.approx(0.261855, abs=1e-6)
    assert class_correlation(p_s, p_t).item() == pytest.approx(0.002604, abs=1e-6)
    assert batch_correlation(p_s, p_t).item() == pytest.approx(0.000238, abs=1e-6)


def test_confidence_fractions_of_the_worked_example():
    f_b, f_c = confidence_fractions(T_WEAK)
    assert f_b.item() == 0.5  # two samples: the median lies between them
    assert f_c.item() == pytest.approx(2 / 3)  # three classes: the middle one is the median


def test_median_fraction_follows_numpys_linear_percentile():
    assert at_most_median_fraction(torch.tensor([3.0, 1.0, 2.0, 10.0])).item() == 0.5  # median 2.5
    assert at_most_median_fraction(torch.tensor([1.0, 1.0, 1.0, 5.0])).item() == 0.75  # ties at the median
    assert at_most_median_fraction(torch.rand(100)).item() == 0.5  # 100 classes: exactly half


def test_the_worked_example_term_by_term():
    f_b, f_c = confidence_fractions(T_WEAK)
    kd = mlkd_kd_terms(S_WEAK, T_WEAK, S_STRONG, T_STRONG, TEMPERATURES, f_b)
    relations = mlkd_relation_terms(S_WEAK, T_WEAK, TEMPERATURES, f_b, f_c)
    assert (0.9 * kd).item() == pytest.approx(1.448626, abs=1e-5)
    assert (0.9 * relations).item() == pytest.approx(0.016808 + 0.002330, abs=1e-6)


def test_the_method_loss_weighted_by_r_and_b_is_the_spec_total():
    terms = method().loss(*outputs(), epoch=1)
    assert (0.1 * terms["ce"]).item() == pytest.approx(0.095626, abs=1e-6)
    assert (0.1 * terms["ce"] + 0.9 * terms["kd"]).item() == pytest.approx(1.563390, abs=1e-5)
    assert terms["kl"].item() == pytest.approx(0.261855, abs=1e-6)  # -a's plain weak-view KL, 0 by default


def test_with_ls_only_the_kd_terms_are_standardised():
    d = LogitStandardization.attach(method(kd_T=2.0), None)
    terms = d.loss(*outputs(), epoch=1)
    assert (0.1 * terms["ce"] + 9 * terms["kd"]).item() == pytest.approx(22.294889, abs=1e-4)
    f_b, f_c = confidence_fractions(T_WEAK)
    temps = (2.0, 3.0, 5.0, 2.0, 6.0)
    kd = mlkd_kd_terms(standardize(S_WEAK), standardize(T_WEAK), standardize(S_STRONG), standardize(T_STRONG),
                       temps, f_b)
    assert (9 * kd).item() == pytest.approx(21.902313, abs=1e-4)
    # CC and BC keep the raw logits
    assert (9 * mlkd_relation_terms(S_WEAK, T_WEAK, temps, f_b, f_c)).item() == pytest.approx(0.256714 + 0.040236,
                                                                                            abs=1e-5)


def test_both_student_views_get_gradients_and_the_teacher_none():
    s_weak, s_strong = S_WEAK.clone().requires_grad_(), S_STRONG.clone().requires_grad_()
    t_weak, t_strong = T_WEAK.clone().requires_grad_(), T_STRONG.clone().requires_grad_()
    terms = method().loss(Outputs(s_weak, strong=Outputs(s_strong)), Outputs(t_weak, strong=Outputs(t_strong)),
                          Batch(None, Y, torch.arange(2)), epoch=1)
    (terms["ce"] + terms["kd"]).backward()
    assert s_weak.grad.abs().sum() > 0 and s_strong.grad.abs().sum() > 0
    assert t_weak.grad is None and t_strong.grad is None


def test_the_student_step_runs_the_student_on_both_views_in_order():
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=3)
    seen = []
    student.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    weak, strong = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out_t = Outputs(T_WEAK, strong=Outputs(T_STRONG))
    StudentStep(student, method()).loss_and_logits(weak, out_t, Batch(weak, Y, torch.arange(2), x_strong=strong), 1,
                                                    {"ce": 0.1, "kl": 0.0, "kd": 0.9})
    assert len(seen) == 2 and seen[0] is weak and seen[1] is strong


def test_strong_views_leave_the_weak_batches_unchanged():
    g = torch.Generator().manual_seed(0)
    data = TensorImageSet(torch.randint(0, 256, (20, 3, 32, 32), generator=g, dtype=torch.uint8),
                          torch.arange(20) % 5, (0.5,) * 3, (0.25,) * 3)
    plain = list(data.train_batches(8, seed=3, epoch=2))
    both = list(data.train_batches(8, seed=3, epoch=2, strong_view=True))
    again = list(data.train_batches(8, seed=3, epoch=2, strong_view=True))
    assert all(a.x_strong is None for a in plain)
    for a, b, c in zip(plain, both, again):
        assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index)
        assert b.x_strong.shape == b.x.shape and not torch.equal(b.x_strong, b.x)
        assert torch.equal(b.x_strong, c.x_strong)  # seeded: a resumed epoch replays it
    shards = [list(data.train_batches(4, seed=3, epoch=2, rank=r, world_size=2, strong_view=True)) for r in range(2)]
    assert torch.equal(torch.cat([shards[0][0].x_strong, shards[1][0].x_strong]), both[0].x_strong)


def teacher_path(folder, arch):
    return os.path.join(str(folder), f"{arch}_vanilla", "ckpt_epoch_240.pth")


@pytest.mark.parametrize("teacher,student,epochs,lr", [("resnet32x4", "resnet8x4", 240, 0.025),
                                                       ("vgg13", "MobileNetV2", 480, 0.01),
                                                       ("resnet32x4", "ShuffleV2", 960, 0.01),
                                                       ("resnet110", "resnet20", 240, 0.025),
                                                       ("resnet56", "ShuffleV1", 240, 0.01)])
def test_per_pair_presets_are_the_mlkd_configs(tmp_path, teacher, student, epochs, lr):
    [c] = parse_configurations(["--path_t", teacher_path(tmp_path, teacher), "--model_s", student,
                                "--distill", "mlkd"])
    o = c.options
    assert (o.epochs, o.learning_rate, o.gamma, o.alpha, o.beta, o.kd_T) == (epochs, lr, 0.1, 0.0, 0.9, 4.0)
    assert o.lr_decay_epochs == "150,180,210"  # the reference keeps them whatever the epoch count
    assert c.sources["learning_rate"] == f"--distill mlkd ({teacher} -> {student})"
    assert "learning_rate=" in c.describe() and f"({teacher} -> {student})" in c.describe()


@pytest.mark.parametrize("teacher,student,epochs,lr", [("resnet32x4", "resnet8x4", 480, 0.025),
                                                       ("vgg13", "vgg8", 480, 0.01),
                                                       ("wrn_40_2", "MobileNetV2", 480, 0.005),
                                                       ("resnet32x4", "ShuffleV1", 960, 0.01)])
def test_the_long_recipe_and_its_precedence(tmp_path, teacher, student, epochs, lr):
    path = teacher_path(tmp_path, teacher)
    [c] = parse_configurations(["--path_t", path, "--model_s", student, "--distill", "mlkd", "--recipe", "long"])
    assert (c.options.epochs, c.options.learning_rate) == (epochs, lr)
    assert c.sources["epochs"] == f"--recipe long ({teacher} -> {student})"
    opt = parse_student_options(["--path_t", path, "--model_s", student, "--distill", "mlkd", "--recipe", "long",
                                 "--epochs", "7"])
    assert (opt.epochs, opt.learning_rate) == (7, lr)
    assert "_mlkd_long_r_0.1_a_0.0_b_0.9_" in student_run_name(opt, teacher)


@pytest.mark.parametrize("teacher,student,T,w", [("resnet32x4", "resnet8x4", 2.0, 9.0), ("vgg13", "vgg8", 2.0, 6.0),
                                                  ("resnet32x4", "ShuffleV2", 2.0, 6.0),
                                                  ("resnet56", "resnet20", 2.0, 9.0)])
def test_with_ls_the_ls_repository_settings_and_long_recipe(tmp_path, teacher, student, T, w):
    [c] = parse_configurations(["--path_t", teacher_path(tmp_path, teacher), "--model_s", student,
                                "--distill", "mlkd", "--logit_stand"])
    o = c.options
    assert (o.kd_T, o.gamma, o.alpha, o.beta) == (T, 0.1, 0.0, w)
    assert o.epochs == (960 if student == "ShuffleV2" else 480)
    assert c.sources["beta"] == f"--logit_stand ({teacher} -> {student})"


def test_an_unknown_recipe_is_refused_with_the_known_ones():
    with pytest.raises(SystemExit, match=r"--recipe short: --distill mlkd has no recipe of that name \(its recipes: "
                                         r"long\)"):
        parse_configurations(["--distill", "mlkd", "--recipe", "short"])
    with pytest.raises(SystemExit, match="--distill kd has no recipe of that name .*none besides its default"):
        parse_configurations(["--distill", "kd", "--recipe", "long"])


def test_ctkd_is_refused_for_several_temperatures():
    with pytest.raises(SystemExit, match="--ctkd learns .*\\(checkpointkd, dkd, kd\\); --distill mlkd softens at "
                                         "several fixed temperatures"):
        parse_configurations(["--distill", "mlkd", "--ctkd"])


@pytest.mark.slow
def test_mlkd_with_ls_trains_an_epoch_from_the_command_line(tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", "mlkd", "--logit_stand", "--epochs", "1",
                                   "--learning_rate", "0.01")
    assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_mlkd_ls_r_0.1_a_0.0_b_9.0_1"
    assert state["opt"]["epochs"] == 1 and state["opt"]["kd_T"] == 2.0
    [row] = [r for r in read_metrics(res["run_dir"]) if "loss_ce" in r]
    # two views of 100 classes through a barely trained student: about 2 * ln(100), where one view gives ln(100)
    assert 2 * 0.8 * math.log(100) < row["loss_ce"] < 2 * 1.2 * math.log(100)
