"""EMKD milestone checking (distiller_zoo/milestone.py): stage weights and the MC loss."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from assembly.options import parse_student_options
from distiller_zoo import POST, PRE, REGISTRY, Batch, DistillContext, MilestoneChecking
from distiller_zoo.milestone import num_stages, stage_weights
from engine.forward import forward
from engine.step import loss_weights
from models import build_model
from tests.distiller_zoo.model_contexts import model_ctx, model_options, with_options


def mc_ctx(ctx, **overrides):
    """``ctx`` for the milestone add-on: its own typed options."""
    return with_options(ctx, model_options(MilestoneChecking, **overrides))


def test_mc_stage_weights():
    assert stage_weights(build_model("myresnet20", block_depth=[3, 7, 2]), [1] * 4) == pytest.approx([1, 3 / 7, 1.5])
    assert stage_weights(build_model("myresnet110"), [1] * 4) == [1.0, 1.0, 1.0]
    assert stage_weights(build_model("mywrn_16_2", block_depth=[1, 2, 4]), [1] * 4) == [2.0, 1.0, 0.5]
    assert stage_weights(build_model("resnet20"), [0.5, 2, 3, 4]) == [0.5, 2.0, 3.0]
    assert num_stages(build_model("resnet20")) == 3 and num_stages(build_model("ResNet50")) == 4


def _mc_reference(fs, ft, T):
    """(T^2 / B) * sum over b, h, w of KL(softmax_c(t / T) || softmax_c(s / T)), with explicit loops."""
    s, t = fs.detach().double().numpy(), ft.detach().double().numpy()
    b, c, h, w = s.shape
    total = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                ls, lt = s[n, :, i, j] / T, t[n, :, i, j] / T
                ls = ls - ls.max() - np.log(np.exp(ls - ls.max()).sum())
                lt = lt - lt.max() - np.log(np.exp(lt - lt.max()).sum())
                total += (np.exp(lt) * (lt - ls)).sum()
    return total * T * T / b


def test_mc_value_matches_formula_and_is_added_to_kd():
    torch.manual_seed(0)
    student = build_model("myresnet20", block_depth=[3, 7, 2])
    teacher = build_model("resnet14")
    ctx = model_ctx(model_options("kd", kd_T=4.0), student, teacher)
    inner = REGISTRY["kd"](ctx)
    d = MilestoneChecking(inner, mc_ctx(ctx, mc_weight=0.01, kd_T=4.0))
    assert d.stage_weights == pytest.approx([1, 3 / 7, 1.5])
    assert d.student_features == d.teacher_features == POST
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        out_s, out_t = forward(student, x, POST), forward(teacher, x, POST)
    batch = Batch(x, y, torch.arange(2))
    terms = d.loss(out_s, out_t, batch, 1)
    plain = inner.loss(out_s, out_t, batch, 1)
    expected = 0.01 * sum(w * _mc_reference(out_s.feats[i], out_t.feats[i], 4.0)
                          for i, w in zip((1, 2, 3), (1.0, 3 / 7, 1.5)))
    assert expected > 0
    assert (terms["kd"] - plain["kd"]).item() == pytest.approx(expected, rel=1e-4)
    assert terms["ce"].item() == pytest.approx(plain["ce"].item()) and terms["kl"].item() == pytest.approx(
        plain["kl"].item())
    # the loop scales the kd term, MC included, with -b (EMKD folds MC into loss_kd)
    assert loss_weights(SimpleNamespace(gamma=1.0, alpha=0.0, beta=0.8))["kd"] == 0.8


def test_mc_keeps_inner_modules_and_stops_on_shape_mismatch():
    torch.manual_seed(0)
    student, teacher = build_model("myresnet20"), build_model("resnet8")
    ctx = model_ctx(model_options("hint"), student, teacher)
    inner = REGISTRY["hint"](ctx)
    d = MilestoneChecking(inner, mc_ctx(ctx))
    assert d.trainable_modules() == inner.trainable_modules() and len(d.trainable_modules()) > 0
    assert all(k.startswith("inner.") for k in d.state_dict())
    # --mc 1 leaves the method's loss weights as they are (the add-on declares no defaults of its own)
    weights = ("gamma", "alpha", "beta")
    plain = parse_student_options(["--distill", "hint"])
    with_mc = parse_student_options(["--distill", "hint", "--mc", "1"])
    assert [getattr(with_mc, w) for w in weights] == [getattr(plain, w) for w in weights] == [1.0, 0.0, 100.0]
    pctx = model_ctx(model_options("abound"), student, teacher, preact=True)
    wrapped = MilestoneChecking(REGISTRY["abound"](pctx), mc_ctx(pctx))
    assert wrapped.student_features == wrapped.teacher_features == PRE
    bad = model_ctx(model_options("kd"), build_model("myresnet20"), build_model("resnet8x4"))
    with pytest.raises(ValueError, match="identical shape.*stage 1"):
        MilestoneChecking(REGISTRY["kd"](bad), mc_ctx(bad))
    with pytest.raises(ValueError, match="identical shape"):
        wctx = model_ctx(model_options("kd"), build_model("wrn_16_1"), build_model("wrn_16_2"))
        MilestoneChecking(REGISTRY["kd"](wctx), mc_ctx(wctx))


def test_mc_wraps_every_registered_method():
    from dataset import TensorImageSet
    torch.manual_seed(0)
    # self-distillation methods (needs_teacher False) have no teacher stages to check against
    names = [n for n in sorted(REGISTRY) if n != "ce" and getattr(REGISTRY[n], "needs_teacher", True)]
    assert {"kd", "crd", "hint", "abound", "fsp", "ickd", "kdrefine"} <= set(names)
    student, teacher = build_model("myresnet8", block_depth=[1, 2, 1]), build_model("resnet8")
    imgs = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.arange(24) % 12, (0.5,) * 3, (0.25,) * 3)
    batch = next(split.train_batches(6, 0, 1, augment=False, strong_view=True))
    for name in names:
        cls = REGISTRY[name]
        opt = parse_student_options(["--distill", name, "--model_s", "myresnet8", "--nce_k", "8",
                                     "--feat_dim", "16", "--mc", "1", "--mc_weight", "0.5"])
        ctx = model_ctx(cls.select_options(opt), student, teacher, preact=cls.student_features == PRE)
        ctx.train_targets = split.targets
        ctx.batch_size = 6  # the batch below (SemCKD sizes its modules by it)
        inner = cls(ctx)
        d = MilestoneChecking(inner, with_options(ctx, MilestoneChecking.select_options(opt)))
        assert d.stage_weights == [1.0, 0.5, 1.0], name
        student.train()
        x = batch.x if d.batch_expansion is None else d.batch_expansion.expand(batch.x)
        out_s = forward(student, x, d.student_features)
        with torch.no_grad():
            out_t = forward(teacher, x, d.teacher_features)
        if d.strong_view:  # MLKD reads both views
            out_s.strong = forward(student, batch.x_strong, d.student_features)
            with torch.no_grad():
                out_t.strong = forward(teacher, batch.x_strong, d.teacher_features)
        terms = d.loss(out_s, out_t, batch, 1)
        mc = 0.5 * d.mc_loss(out_s, out_t)
        assert mc.item() > 0 and torch.isfinite(terms["kd"]), name
        total = sum(loss_weights(opt)[k] * v for k, v in terms.items())
        total.backward()
        assert all(p.grad is not None for p in student.parameters() if p.requires_grad), name
        student.zero_grad(set_to_none=True)


def test_mc_needs_a_teacher():
    student = build_model("myresnet8")
    ctx = DistillContext(model_options("kd"), student, None, None, None, num_classes=100)
    with pytest.raises(ValueError, match="without a teacher"):
        MilestoneChecking(REGISTRY["kd"](ctx), mc_ctx(ctx))


def test_the_stage_count_is_the_models_num_stages():
    torch.manual_seed(0)
    student, teacher = build_model("resnet20"), build_model("resnet20")
    ctx = model_ctx(model_options("kd"), student, teacher)
    assert MilestoneChecking(REGISTRY["kd"](ctx), mc_ctx(ctx)).n_stages == 3
    # a model that reports two stages gets two compared, whatever its architecture name says
    student.num_stages = 2
    d = MilestoneChecking(REGISTRY["kd"](ctx), mc_ctx(ctx, B1_weight=0.5, B2_weight=2.0, B3_weight=7.0))
    assert num_stages(student) == 2 and d.n_stages == 2 and d.stage_weights == [0.5, 2.0]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out_s, out_t = forward(student, x, POST), forward(teacher, x, POST)
        out_t.feats[3] = out_t.feats[3] + 1.0  # a third-stage difference: not compared with two stages
        expected = sum(w * _mc_reference(out_s.feats[i], out_t.feats[i], 4.0) for i, w in ((1, 0.5), (2, 2.0)))
        assert d.mc_loss(out_s, out_t).item() == pytest.approx(expected, rel=1e-4)
