"""SemCKD (--distill semckd): the aggregation of the spec's worked example, module sizes (the spec's parameter
count, pairs of different widths and resolutions), the attention and the per-sample MSEs, and the refusals."""
import pytest
import torch
import torch.nn.functional as F

from assembly.options import parse_student_options
from distiller_zoo import POST, DistillContext, build_distiller
from distiller_zoo.SemCKD import SemCKD, gram, semckd_loss
from engine.forward import forward
from helper.types import Batch
from tests.methods import built_method, method_options


def test_aggregation_of_the_spec():
    # B = 2, one student layer, two teacher layers
    attention = torch.tensor([[[0.7, 0.3]], [[0.4, 0.6]]])
    mse = torch.tensor([[[1.0, 0.5]], [[2.0, 0.1]]])
    assert semckd_loss(attention, mse).item() == pytest.approx(0.855, rel=1e-6)


def test_parameters_for_resnet32x4_to_resnet8x4_at_batch_64():
    # the spec's 10,249,280 counts 15,648 parameters of the reference's unused regressors inside the embeddings
    _, _, d = built_method("semckd", student="resnet8x4", teacher="resnet32x4", num_classes=100, batch_size=64)
    assert sum(p.numel() for p in d.parameters()) == 10249280 - 15648
    assert [m.linear1.in_features for m in d.query] == [64, 64, 64]
    assert [m.linear2.out_features for m in d.key] == [16, 16, 16]


@pytest.mark.parametrize("teacher,student", [("wrn_40_2", "resnet8"), ("resnet32x4", "ShuffleV2"),
                                             ("vgg13", "MobileNetV2")])
def test_one_projection_per_layer_pair_from_student_to_teacher_width(teacher, student):
    s, t, d = built_method("semckd", student=student, teacher=teacher, num_classes=100, batch_size=4)
    x = torch.randn(4, 3, 32, 32)
    out_s, out_t = forward(s, x, POST), forward(t, x, POST)
    s_maps, t_maps = out_s.feats[1:-1], out_t.feats[1:-1]
    assert (d.s_len, d.t_len) == (len(s_maps), len(t_maps))
    for i, fs in enumerate(s_maps):
        for j, ft in enumerate(t_maps):
            reg = d.regressors[i * d.t_len + j]
            assert (reg[0].in_channels, reg[-1].out_channels) == (fs.shape[1], ft.shape[1])
    mse = d.per_sample_mse(s_maps, t_maps)
    att = d.attention(s_maps, t_maps)
    assert mse.shape == att.shape == (4, d.s_len, d.t_len)
    assert torch.allclose(att.sum(dim=-1), torch.ones(4, d.s_len))
    loss = d.method_loss(out_s, out_t, Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4)), 1)
    assert torch.isfinite(loss)


def test_per_sample_mse_pools_the_larger_map_and_attention_is_a_softmax_of_embedded_grams():
    # resnet8 stage maps 16@32, 32@16, 64@8 on both sides
    s, t, d = built_method("semckd", student="resnet8", teacher="resnet8", batch_size=4, soft=2.0)
    d.eval()
    x = torch.randn(4, 3, 32, 32)
    s_maps, t_maps = forward(s, x, POST).feats[1:-1], forward(t, x, POST).feats[1:-1]
    mse = d.per_sample_mse(s_maps, t_maps)
    # student layer 0 (32x32) onto teacher layer 2 (8x8): the student map is pooled
    v = d.regressors[0 * 3 + 2](F.adaptive_avg_pool2d(s_maps[0], 8))
    assert torch.allclose(mse[:, 0, 2], ((v - t_maps[2]) ** 2).mean(dim=(1, 2, 3)), rtol=1e-5)
    # student layer 2 (8x8) onto teacher layer 0 (32x32): the teacher map is pooled
    v = d.regressors[2 * 3 + 0](s_maps[2])
    assert torch.allclose(mse[:, 2, 0], ((v - F.adaptive_avg_pool2d(t_maps[0], 8)) ** 2).mean(dim=(1, 2, 3)),
                          rtol=1e-5)
    query = d.query[1](gram(s_maps[1]))
    key = d.key[0](gram(t_maps[0]))
    assert torch.allclose(query.norm(dim=1), torch.ones(4), atol=1e-5)
    energy = torch.stack([(query * d.key[j](gram(t_maps[j]))).sum(1) for j in range(3)], dim=1)
    assert torch.allclose(d.attention(s_maps, t_maps)[:, 1], F.softmax(energy / 2.0, dim=1), atol=1e-6)
    assert torch.allclose((query * key).sum(1), energy[:, 0])


def test_the_attention_is_trained_through_the_loss():
    s, t, d = built_method("semckd", student="resnet8", teacher="resnet8", batch_size=4)
    x = torch.randn(4, 3, 32, 32)
    out_s, out_t = forward(s, x, POST), forward(t, x, POST)
    d.method_loss(out_s, out_t, Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4)), 1).backward()
    for module in (d.query, d.key, d.regressors):
        assert all(p.grad is not None for p in module.parameters())
    assert all(p.grad is None for p in t.parameters())


def test_defaults_and_flags():
    opt = parse_student_options(["--distill", "semckd"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.soft, opt.kd_T) == (1.0, 1.0, 400.0, 1.0, 4)
    assert parse_student_options(["--distill", "semckd", "-s", "0.5"]).soft == 0.5
    assert SemCKD.full_batches_only


def test_refusals():
    with pytest.raises(ValueError, match="--batch_size 4 or more"):
        built_method("semckd", batch_size=3)
    with pytest.raises(ValueError, match="--soft must be positive"):
        built_method("semckd", batch_size=8, soft=0.0)
    _, _, d = built_method("semckd", batch_size=8)
    s, t, _ = built_method("kd")
    x = torch.randn(4, 3, 32, 32)
    with pytest.raises(ValueError, match="sized for batches of 8"):
        d.method_loss(forward(s, x, POST), forward(t, x, POST), Batch(x, torch.zeros(4, dtype=torch.long),
                                                                      torch.arange(4)), 1)
    # a training set without one full batch
    ctx = DistillContext(method_options("semckd"), s, t, list(forward(s, x, POST).feats),
                         list(forward(t, x, POST).feats), train_targets=torch.zeros(30, dtype=torch.long),
                         batch_size=64)
    with pytest.raises(ValueError, match="training set has 30 samples"):
        build_distiller("semckd", ctx)
