"""SSKD: the rotation views (rows 4i+k), the spec's worked example, the error-level row selection, the heads of
pairs of different widths, the init stage of the teacher's head, refusals, and resume of both heads from the CLI."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from assembly.options import parse_student_options
from dataset import TensorImageSet
from distiller_zoo import DistillContext, build_distiller
from distiller_zoo.SSKD import ROTATIONS, SSKD, kept_rows, rotation_similarities, true_rank
from engine.init_stage import run_init_stage
from helper.logging import NullLogger
from helper.types import Batch, Outputs
from tests.distiller_zoo.model_pairs import PAIRS, PAIR_IDS, built_pair, pair_outputs
from tests.distiller_zoo.tiny_net import changed, snapshot
from tests.methods import method_options, resumed_and_straight


def test_the_batch_becomes_four_rotations_of_each_image_at_rows_4i_plus_k():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)  # image i: [[a, b], [c, d]]
    rows = ROTATIONS.expand(x)
    assert rows.shape == (8, 1, 2, 2)
    a, b, c, d = x[1, 0].flatten().tolist()
    # image 1, counter-clockwise by 0, 90, 180 and 270 degrees
    assert rows[4, 0].tolist() == [[a, b], [c, d]]
    assert rows[5, 0].tolist() == [[b, d], [a, c]]
    assert rows[6, 0].tolist() == [[d, c], [b, a]]
    assert rows[7, 0].tolist() == [[c, a], [d, b]]
    assert torch.equal(ROTATIONS.originals(rows), x)
    with pytest.raises(ValueError, match="must be square; got 2x3"):
        ROTATIONS.expand(torch.zeros(1, 3, 2, 3))


# spec 2.7's worked example: N = 2 images, 8 rows
Z_S = torch.tensor([[1, 2, 0.5], [0.5, 1, 0], [0.2, 0.1, 0.3], [1, 0, 0], [0.2, -1, 1.5], [0, 0.5, 1], [0.3, 0.2, 0.1],
                    [-0.5, 0, 0.5]])
Z_T = torch.tensor([[2, 1, 0], [0, 2, 0], [1, 0, 0.5], [0, 1, 0.2], [0, -0.5, 2.5], [0.5, 0, 1.5], [2, 0, 0],
                    [0, 0.2, 1]])
U_S = torch.tensor([[1, 0], [0.9, 0.1], [0.5, 0.5], [0.7, -0.2], [0, 1], [0.2, 0.9], [-0.3, 0.8], [0.6, 0.6]])
U_T = torch.tensor([[1, 0.2], [0.8, 0.3], [0.1, 0.9], [0.9, 0], [0.1, 1], [0, 0.8], [0.9, 0.1], [0.3, 1]])
Y = torch.tensor([1, 2])


def example_method(**options):
    """SSKD with identity heads, so that the pooled features are the example's head outputs."""
    feats = [torch.zeros(2, 2)]
    d = build_distiller("sskd", DistillContext(method_options("sskd", **options), None, None, feats, feats))
    d.head_s, d.head_t = nn.Identity(), nn.Identity()
    return d, Outputs(Z_S.clone().requires_grad_(), [U_S.clone().requires_grad_()]), Outputs(Z_T, [U_T])


def test_the_worked_example_term_by_term_and_with_the_cifar_weights():
    d, out_s, out_t = example_method()
    batch = Batch(None, Y, None)
    sim_t = rotation_similarities(U_T)
    assert torch.allclose(sim_t, torch.tensor([[0.98701, 0.44255], [0.30320, 0.99994], [0.98058, 0.09950],
                                               [0.19612, 0.99504], [0.99624, 0.20878], [0.46961, 0.98166]]),
                          atol=1e-5)
    l_tf, l_ss = d.sskd_terms(out_s, out_t, batch)
    assert l_tf.item() == pytest.approx(0.192461, rel=1e-5) and l_ss.item() == pytest.approx(0.018775, rel=1e-4)
    terms = d.loss(out_s, out_t, batch, 1)
    assert terms["ce"].item() == pytest.approx(0.383944, rel=1e-5)
    assert terms["kl"].item() == pytest.approx(0.261855, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(2.7 * 0.192461 + 10 * 0.018775, rel=1e-4)
    run = parse_student_options(["--distill", "sskd"])
    total = sum(w * terms[k] for k, w in (("ce", run.gamma), ("kl", run.alpha), ("kd", run.beta)))
    assert total.item() == pytest.approx(0.981461, rel=1e-5)
    # torchdistill's weights (CE 1.0)
    assert (total + 0.9 * terms["ce"]).item() == pytest.approx(1.327011, rel=1e-5)
    total.backward()
    assert out_s.logits.grad.abs().sum() > 0 and out_s.feats[-1].grad.abs().sum() > 0
    # stage 1 on the teacher's heads: CE of the cosine rows against each rotated row's own image
    assert d.init_loss(None, out_t, batch).item() == pytest.approx(0.651439, rel=1e-5)


def test_the_selection_keeps_every_correct_row_and_the_best_ranked_share_of_the_others():
    # spec 2.7: tf ranks (teacher logits of the rotated rows vs the labels) and ss ranks (its cosine rows)
    rotated_t = Z_T[[1, 2, 3, 5, 6, 7]]
    tf_rank = true_rank(rotated_t, Y.repeat_interleave(3))
    # row 4 ([2, 0, 0], label 2) ties with class 1: ranked in its favour here (1; a non-stable argsort may say 2)
    assert tf_rank.tolist() == [0, 2, 0, 0, 1, 0]
    assert kept_rows(tf_rank, 1.0).tolist() == [1] * 6
    ss_rank = true_rank(rotation_similarities(U_T), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert ss_rank.tolist() == [0, 1, 0, 0, 1, 0]
    # two wrong rows, int(0.75 * 2) = 1 kept: the first of equal rank
    assert kept_rows(ss_rank, 0.75).tolist() == [1, 1, 1, 1, 0, 1]
    # int(ratio * #wrong) as Python computes it: 0.7 * 10 is 7 (float32 would give 6.99...)
    rank = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 0, 0])
    mask = kept_rows(rank, 0.7)
    assert mask.sum().item() == 2 + 7 and mask[[0, 1, 3, 6, 9, 10, 11]].tolist() == [1] * 7
    assert mask[[5, 7]].tolist() == [0, 0]  # the two worst ranks (9, 6) go; of the two 5s the first stays
    assert mask[[4, 8]].tolist() == [1, 0]
    assert kept_rows(rank, 0.0).tolist() == [0] * 10 + [1, 1]


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_the_heads_and_cosine_matrices_of_pairs_of_different_widths(pair):
    student, teacher, d = built_pair("sskd", *pair)
    out_s, out_t = pair_outputs(student, teacher, batch=12)  # 3 images' rows (their values need not be rotations)
    d_s, d_t = out_s.feats[-1].shape[1], out_t.feats[-1].shape[1]
    assert d_s != d_t
    for head, width in ((d.head_s, d_s), (d.head_t, d_t)):
        assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
        assert (head[0].in_features, head[0].out_features, head[2].out_features) == (width, width, width)
    assert rotation_similarities(d.head_s(out_s.feats[-1])).shape == (9, 3)
    batch = Batch(None, torch.tensor([1, 2, 3]), None)
    terms = d.loss(out_s, out_t, batch, 1)
    (terms["ce"] + terms["kl"] + terms["kd"]).backward()
    assert all(p.grad is not None for p in d.head_s.parameters())
    assert all(p.grad is None for p in d.head_t.parameters())  # frozen after its init stage
    assert all(p.grad is None for p in teacher.parameters())
    assert d.trainable_modules() == [d.head_s] and d.init_modules(student) == [d.head_t]


def test_outputs_of_the_unexpanded_batch_are_refused_with_the_reason():
    d, out_s, out_t = example_method()
    with pytest.raises(ValueError, match=r"reads the outputs of each image's 4 rotations \(12 rows for 3 labels\), "
                                         r"got 8 rows"):
        d.loss(out_s, out_t, Batch(None, torch.tensor([0, 1, 2]), None), 1)


def test_the_init_stage_trains_the_teachers_head_on_the_rotations_with_its_own_schedule():
    student, teacher, d = built_pair("sskd", "resnet14", "resnet8")
    assert d.init_lr(0.01) == 0.05  # the reference's head lr, not the student's
    assert [round(d.init_lr_factor(e, 60), 8) for e in (1, 30, 31, 45, 46, 60)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert d.init_lr_factor(1, 1) == 1.0
    opt = parse_student_options(["--distill", "sskd", "--init_epochs", "1", "--batch_size", "4"])
    assert opt.init_epochs == 1 and parse_student_options(["--distill", "sskd"]).init_epochs == 60
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = SimpleNamespace(train=TensorImageSet(images, torch.arange(8) % 100, [0.5] * 3, [0.25] * 3))
    seen = []
    teacher.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    rows = []

    class Logger(NullLogger):
        def log(self, row, prefix=""):
            rows.append(row)

    before = snapshot(student, teacher, d)
    run_init_stage(opt, data, student, teacher, d, torch.device("cpu"), Logger())
    assert seen == [16, 16]  # two batches of 4 images, each as its 16 rotation rows
    assert {(i, n.split(".")[0]) for i, n in changed(before, student, teacher, d)} == {(2, "head_t")}
    assert rows[0]["lr"] == 0.05


def test_options_defaults_and_refusals():
    run = parse_student_options(["--distill", "sskd"])
    assert (run.gamma, run.alpha, run.beta, run.kd_T) == (0.1, 0.9, 1.0, 4)
    assert (run.sskd_tf_weight, run.sskd_ss_weight, run.sskd_tf_T, run.sskd_ss_T, run.sskd_tf_ratio,
            run.sskd_ss_ratio, run.sskd_init_lr) == (2.7, 10.0, 4.0, 0.5, 1.0, 0.75, 0.05)
    assert SSKD.batch_expansion is ROTATIONS
    feats = [torch.zeros(2, 4)]
    for flag, value, message in (("sskd_ss_ratio", 1.5, "is a share of rows, between 0 and 1; got 1.5"),
                                 ("sskd_tf_T", 0.0, "must be positive, got 0.0"),
                                 ("sskd_init_lr", -1.0, "must be positive, got -1.0")):
        ctx = DistillContext(method_options("sskd", **{flag: value}), None, None, feats, feats)
        with pytest.raises(ValueError, match=f"--{flag} {message}"):
            build_distiller("sskd", ctx)


@pytest.mark.slow
def test_resume_continues_exactly_with_both_heads(micro_cifar, tmp_path):
    straight, resumed = resumed_and_straight(micro_cifar, tmp_path, "--distill", "sskd", "--init_epochs", "1")
    assert {k.split(".")[0] for k in resumed["distiller"]} == {"head_s", "head_t"}
    for part in ("model", "distiller"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
