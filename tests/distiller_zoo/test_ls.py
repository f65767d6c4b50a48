"""--logit_stand (LS, spec 1.1): the spec's worked example, where the map applies, its presets and refusals."""
import os

import pytest
import torch
import torch.nn.functional as F

from assembly.options import parse_configurations, parse_student_options, student_run_name
from distiller_zoo import DKD, KD, Batch, Outputs
from distiller_zoo.LS import LogitStandardization, standardize
from tests.methods import distill_one_epoch, method_options

Z_S = torch.tensor([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])
Z_T = torch.tensor([[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]])
Y = torch.tensor([1, 2])


def with_ls(cls, **options):
    method = cls(_ctx(cls, **options))
    return LogitStandardization.attach(method, None)


def _ctx(cls, **options):
    from distiller_zoo import DistillContext
    return DistillContext(method_options(cls, **options), None, None)


def test_standardize_matches_the_worked_example():
    assert torch.allclose(standardize(Z_S), torch.tensor([[-0.218218, 1.091089, -0.872871],
                                                           [-0.026660, -0.986404, 1.013063]]), atol=1e-6)
    assert torch.allclose(standardize(Z_T), torch.tensor([[1.0, 0.0, -1.0], [-0.414781, -0.725866, 1.140647]]),
                          atol=1e-6)


@pytest.mark.parametrize("T,expected", [(2.0, 0.281808), (4.0, 0.266268)])
def test_kd_with_ls_softens_the_standardised_logits(T, expected):
    terms = with_ls(KD, kd_T=T).loss(Outputs(Z_S), Outputs(Z_T), Batch(None, Y, torch.arange(2)), 1)
    assert terms["kl"].item() == pytest.approx(expected, abs=1e-6)
    # the cross-entropy keeps the raw logits
    assert terms["ce"].item() == pytest.approx(0.383944, abs=1e-6)
    if T == 2.0:  # the spec's KD+LS total, CE weight 0.1 and w = 9
        assert (0.1 * terms["ce"] + 9 * terms["kl"]).item() == pytest.approx(2.574666, abs=1e-5)


def test_dkd_with_ls_matches_the_worked_example():
    d = with_ls(DKD, kd_T=2.0, dkd_alpha=9.0, dkd_beta=72.0)
    loss = d.method_loss(Outputs(Z_S), Outputs(Z_T), Batch(None, Y, torch.arange(2)), epoch=20)
    assert loss.item() == pytest.approx(10.686055, abs=1e-4)


def test_without_ls_nothing_changes():
    plain = KD(_ctx(KD, kd_T=2.0))
    assert plain.distill_logits(Z_S, Z_T) == (Z_S, Z_T)  # the same objects: the fp32 path is untouched
    raw = F.kl_div(F.log_softmax(Z_S / 2, 1), F.softmax(Z_T / 2, 1), reduction="sum").item() * 2 ** 2 / 2
    assert plain.kl_term(Z_S, Z_T).item() == pytest.approx(raw, abs=1e-6)


def test_the_student_gets_gradients_through_the_standardisation():
    z_s, z_t = Z_S.clone().requires_grad_(), Z_T.clone().requires_grad_()
    with_ls(KD, kd_T=2.0).kl_term(z_s, z_t.detach()).backward()
    assert z_s.grad.abs().sum() > 0 and z_t.grad is None
    # a row shifted by a constant standardises to the same row: its gradient sums to zero per row
    assert torch.allclose(z_s.grad.sum(dim=1), torch.zeros(2), atol=1e-6)


def teacher_path(folder, arch="resnet32x4"):
    return os.path.join(str(folder), f"{arch}_vanilla", "ckpt_epoch_240.pth")


@pytest.mark.parametrize("teacher,student,kd_T,alpha", [("resnet32x4", "resnet8x4", 2.0, 9.0),
                                                        ("vgg13", "vgg8", 3.0, 9.0),
                                                        ("resnet110", "resnet20", 4.0, 12.0),
                                                        ("ResNet50", "MobileNetV2", 3.0, 1.0),
                                                        ("resnet8", "resnet8", 2.0, 9.0)])
def test_kd_presets_per_pair(tmp_path, teacher, student, kd_T, alpha):
    [c] = parse_configurations(["--path_t", teacher_path(tmp_path, teacher), "--model_s", student, "--logit_stand"])
    assert (c.options.kd_T, c.options.gamma, c.options.alpha, c.options.beta) == (kd_T, 0.1, alpha, 0.0)
    assert c.sources["kd_T"] == f"--logit_stand ({teacher} -> {student})"


def test_dkd_presets_scale_alpha_and_beta_by_the_weight(tmp_path):
    opt = parse_student_options(["--path_t", teacher_path(tmp_path, "resnet56"), "--model_s", "resnet20",
                                 "--distill", "dkd", "--logit_stand"])
    assert (opt.kd_T, opt.dkd_alpha, opt.dkd_beta, opt.gamma, opt.alpha, opt.beta) == (3.0, 18.0, 36.0, 1.0, 0.0, 1.0)
    opt = parse_student_options(["--path_t", teacher_path(tmp_path), "--model_s", "resnet8x4", "--distill", "dkd",
                                 "--logit_stand"])
    assert (opt.kd_T, opt.dkd_alpha, opt.dkd_beta) == (2.0, 9.0, 72.0)


def test_a_flag_beats_the_preset(tmp_path):
    opt = parse_student_options(["--path_t", teacher_path(tmp_path), "--model_s", "resnet8x4", "--logit_stand",
                                 "--kd_T", "4", "-a", "5"])
    assert (opt.kd_T, opt.alpha, opt.gamma) == (4.0, 5.0, 1.0)


def test_methods_without_a_softening_term_are_refused():
    for method in ("crd", "kdrefine", "byot", "attention"):
        with pytest.raises(SystemExit, match=f"--logit_stand standardises .*--distill {method} has no such term"):
            parse_configurations(["--distill", method, "--logit_stand"])


def test_run_folders_name_the_add_ons():
    opt = parse_student_options(["--logit_stand", "--mc", "1"])
    assert student_run_name(opt, "resnet8").split("_cifar100_")[1].startswith("kd_ls_mc_")


def test_kd_with_ls_trains_from_the_command_line(tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", "kd", "--logit_stand")
    assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_kd_ls_r_0.1_a_9.0_b_0.0_1"
    assert state["opt"]["logit_stand"] is True and state["opt"]["kd_T"] == 2.0
