"""DKD: TCKD/NCKD by hand, the batch reduction and the warm-up."""
import math
import os

import pytest
import torch
import torch.nn as nn

from assembly.options import parse_configurations, parse_student_options
from distiller_zoo import DKDLoss, build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from tests.distiller_zoo.fake_features import t64, fake_options


def test_dkd_three_classes_by_hand():
    T = 2.0
    y_s = [[1.0, 2.0, 0.5]]
    y_t = [[3.0, 0.0, 1.0]]
    target = 0

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax(y_s[0]), softmax(y_t[0])
    bs, bt = [ps[target], 1 - ps[target]], [pt[target], 1 - pt[target]]
    tckd = sum(q * math.log(q / p) for p, q in zip(bs, bt)) * T * T
    others = [c for c in range(3) if c != target]
    qs = [ps[c] / sum(ps[o] for o in others) for c in others]
    qt = [pt[c] / sum(pt[o] for o in others) for c in others]
    nckd = sum(q * math.log(q / p) for p, q in zip(qs, qt)) * T * T

    crit = DKDLoss(alpha=1.0, beta=8.0, T=T, warmup=20)
    s, t, y = t64(y_s), t64(y_t), torch.tensor([target])
    assert crit.tckd(s, t, y).item() == pytest.approx(tckd, rel=1e-9)
    assert crit.nckd(s, t, y).item() == pytest.approx(nckd, rel=1e-9)
    assert crit(s, t, y).item() == pytest.approx(tckd + 8 * nckd, rel=1e-9)
    assert crit(s, t, y, epoch=5).item() == pytest.approx(0.25 * (tckd + 8 * nckd), rel=1e-9)


def test_dkd_reduction_is_per_batch_mean():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    crit = DKDLoss()
    whole = crit(s, t, y).item()
    parts = [crit(s[i:i + 1], t[i:i + 1], y[i:i + 1]).item() for i in range(6)]
    assert whole == pytest.approx(sum(parts) / 6, rel=1e-9)


@pytest.mark.parametrize("epoch,factor", [(1, 0.05), (10, 0.5), (20, 1.0), (40, 1.0)])
def test_dkd_warmup(epoch, factor):
    crit = DKDLoss(warmup=20)
    assert crit.warmup_factor(epoch) == pytest.approx(factor)
    ctx = DistillContext(options=fake_options("dkd"), student=nn.Identity(), teacher=nn.Identity())
    dist = build_distiller("dkd", ctx)
    torch.manual_seed(1)
    s, t = torch.randn(4, 100), torch.randn(4, 100)
    batch = Batch(x=torch.zeros(4), y=torch.randint(0, 100, (4,)), index=torch.arange(4))
    full = crit(s, t, batch.y).item()
    kd = dist.loss(Outputs(s), Outputs(t), batch, epoch)["kd"].item()
    assert kd == pytest.approx(factor * full, rel=1e-5)


@pytest.mark.parametrize("teacher,student,beta", [("resnet56", "resnet20", 2.0), ("resnet110", "resnet32", 2.0),
                                                  ("vgg13", "vgg8", 6.0), ("wrn_40_2", "wrn_40_1", 6.0),
                                                  ("resnet32x4", "resnet8x4", 8.0), ("resnet32x4", "ShuffleV2", 8.0)])
def test_beta_presets_are_mdistillers_per_pair_configs(tmp_path, teacher, student, beta):
    path = os.path.join(str(tmp_path), f"{teacher}_vanilla", "ckpt_epoch_240.pth")
    [c] = parse_configurations(["--path_t", path, "--model_s", student, "--distill", "dkd"])
    assert (c.options.dkd_beta, c.options.dkd_alpha, c.options.kd_T) == (beta, 1.0, 4.0)
    assert (c.sources.get("dkd_beta") == f"--distill dkd ({teacher} -> {student})") == (beta != 8.0)
    given = parse_student_options(["--path_t", path, "--model_s", student, "--distill", "dkd", "--dkd_beta", "3"])
    assert given.dkd_beta == 3.0
