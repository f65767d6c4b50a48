"""FT (factor transfer): the loss formula, paraphraser/translator modules and the init stage."""
import pytest
import torch

from distiller_zoo import FactorTransfer, build_distiller
from distiller_zoo.base import Outputs
from models.connectors import Paraphraser, Translator
from tests.distiller_zoo.tiny_net import TinyNet, make_ctx, snapshot, changed, run_init_stage, decreases


def factor_reference(f, p1=2):
    q = (f ** p1).mean(dim=1).reshape(f.shape[0], -1)
    return q / q.norm(dim=1, keepdim=True)


def test_factor_transfer_matches_formula():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(3, 5, 4, 4), torch.randn(3, 6, 4, 4)
    ref = (factor_reference(f_s) - factor_reference(f_t)).abs().mean()
    assert float(FactorTransfer()(f_s, f_t)) == pytest.approx(float(ref), rel=1e-5)
    ref2 = ((factor_reference(f_s) - factor_reference(f_t)) ** 2).mean()
    assert float(FactorTransfer(p2=2)(f_s, f_t)) == pytest.approx(float(ref2), rel=1e-5)
    # larger student map: 2x2 block averages down to the teacher's 2x2 grid
    big = torch.randn(3, 5, 4, 4)
    small_t = torch.randn(3, 6, 2, 2)
    pooled = big.reshape(3, 5, 2, 2, 2, 2).mean(dim=(3, 5))
    ref3 = (factor_reference(pooled) - factor_reference(small_t)).abs().mean()
    assert float(FactorTransfer()(big, small_t)) == pytest.approx(float(ref3), rel=1e-5)


def test_ft_modules_shapes_and_state_dict_keys():
    para = Paraphraser((2, 16, 4, 4))
    assert para(torch.randn(2, 16, 4, 4), is_factor=True).shape == (2, 8, 4, 4)
    factor, rec = para(torch.randn(2, 16, 4, 4))
    assert factor.shape == (2, 8, 4, 4) and rec.shape == (2, 16, 4, 4)
    assert set(para.state_dict()) == {f"{p}.{i}.{w}" for p in ("encoder", "decoder") for i in (0, 3, 6)
                                      for w in ("weight", "bias")}
    trans = Translator((2, 4, 4, 4), (2, 16, 4, 4))
    assert trans(torch.randn(2, 4, 4, 4)).shape == (2, 8, 4, 4)
    assert "encoder.1.running_mean" in trans.state_dict() and "encoder.7.weight" in trans.state_dict()
    bn_para = Paraphraser((2, 16, 4, 4), use_bn=True)
    assert "decoder.4.running_var" in bn_para.state_dict()


def test_ft_init_stage_trains_paraphraser_only():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx("factor", student, teacher))
    assert d.init_modules(student) == [d.paraphraser]
    assert d.trainable_modules() == [d.translator]
    before = snapshot(student, teacher, d.paraphraser, d.translator)
    run_init_stage(d, student, teacher)
    ch = changed(before, student, teacher, d.paraphraser, d.translator)
    assert ch == {(2, n) for n, _ in d.paraphraser.named_parameters()}


def test_ft_init_loss_is_reconstruction_mse_and_decreases():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx("factor", student, teacher))
    torch.manual_seed(0)
    f_t = torch.randn(4, 12, 2, 2).relu()
    dummy = torch.zeros(4, 5)
    out_t = Outputs(dummy, [None, None, f_t, dummy])
    with torch.no_grad():
        _, rec = d.paraphraser(f_t)
        assert float(d.init_loss(None, out_t, None)) == pytest.approx(float(((rec - f_t) ** 2).mean()), rel=1e-5)
    decreases(lambda: d.init_loss(None, out_t, None), list(d.paraphraser.parameters()), lr=0.01)


def test_ft_init_lr_rule():
    for name, lr in (("resnet8x4", 0.01), ("wrn_16_2", 0.01), ("vgg8", 0.05), ("ShuffleV1", 0.05),
                     ("ResNet50", 0.05)):
        d = build_distiller("factor", make_ctx("factor", TinyNet(), TinyNet(), student_name=name))
        assert d.init_lr(0.05) == lr, name


def test_ft_main_stage_loss_gradients_and_decrease():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx("factor", student, teacher))
    torch.manual_seed(0)
    f_s = torch.randn(4, 16, 2, 2, requires_grad=True)
    f_t = torch.randn(4, 12, 2, 2, requires_grad=True)
    dummy = torch.zeros(4, 5)

    def loss_fn():
        return d.method_loss(Outputs(dummy, [None, None, f_s, dummy]), Outputs(dummy, [None, None, f_t, dummy]),
                             None, 1)

    d.train()
    loss = loss_fn()
    assert not d.paraphraser.training  # frozen in the main stage, as RepDistiller
    with torch.no_grad():
        ref = FactorTransfer()(d.translator(f_s), d.paraphraser(f_t, is_factor=True))
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    loss.backward()
    assert f_s.grad is not None and f_t.grad is None
    assert all(p.grad is not None for p in d.translator.parameters())
    assert all(p.grad is None for p in d.paraphraser.parameters())
    decreases(loss_fn, [f_s] + list(d.translator.parameters()), lr=0.01)
