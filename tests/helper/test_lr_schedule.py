"""--lr_schedule step|cosine|multistep and --warm-up (helper/util.py): the lr of chosen epochs, by hand."""
import math
import types

import pytest
import torch

from helper.util import adjust_learning_rate, scheduled_lr


def options(schedule="step", warm_up=False, learning_rate=0.1, epochs=200, decay_epochs="150,180,210", rate=0.1):
    return types.SimpleNamespace(lr_schedule=schedule, warm_up=warm_up, learning_rate=learning_rate, epochs=epochs,
                                 lr_decay_epochs=decay_epochs, lr_decay_rate=rate)


def lrs(opt, base=None):
    base = opt.learning_rate if base is None else base
    return [scheduled_lr(e, base, opt) for e in range(1, opt.epochs + 1)]


# CheckpointKD's --cos_lr over 200 epochs from 0.1: lr = 0.1 * (1 + cos(pi * e / 200)) / 2 at its 0-indexed epoch e,
# which is epoch e + 1 here. cos(pi/4) = sqrt(2)/2, cos(pi/2) = 0, cos(3 pi/4) = -sqrt(2)/2, and
# (1 + cos(199 pi / 200)) / 2 = sin(pi / 400)^2.
@pytest.mark.parametrize("epoch,lr", [
    (1, 0.1), (51, 0.1 * (1 + math.sqrt(2) / 2) / 2), (101, 0.05), (151, 0.1 * (1 - math.sqrt(2) / 2) / 2),
    (200, 0.1 * math.sin(math.pi / 400) ** 2)])
def test_cosine_lr_at_chosen_epochs(epoch, lr):
    assert scheduled_lr(epoch, 0.1, options("cosine")) == pytest.approx(lr, rel=1e-12)


def test_cosine_by_the_numbers():
    got = lrs(options("cosine"))
    assert got[50] == pytest.approx(0.085355339, rel=1e-8) and got[150] == pytest.approx(0.014644661, rel=1e-8)
    assert got[-1] == pytest.approx(6.16838e-06, rel=1e-5)  # the last epoch stays above eta_min = 0
    assert all(a > b for a, b in zip(got, got[1:]))
    # T_max is --epochs: half of a 10-epoch run's lr at its 6th epoch
    assert scheduled_lr(6, 0.2, options("cosine", epochs=10)) == pytest.approx(0.1, rel=1e-12)


def test_cosine_is_torchs_cosine_annealing_stepped_once_per_epoch():
    # CheckpointKD builds CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0) and steps it at every epoch's start
    opt = options("cosine", epochs=30)
    p = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=30, eta_min=0)
    reference = []
    for _ in range(30):
        reference.append(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    assert lrs(opt) == pytest.approx(reference, rel=1e-9, abs=1e-15)


# CheckpointKD's --multistep_lr: MultiStepLR([149, 179, 209, 239], 0.1) at 0-indexed epoch e (= epoch e + 1 here):
# 0.1 * 0.1 ** (number of milestones <= e)
@pytest.mark.parametrize("epoch,lr", [(1, 0.1), (149, 0.1), (150, 0.01), (179, 0.01), (180, 0.001), (209, 0.001),
                                      (210, 1e-4), (239, 1e-4), (240, 1e-5)])
def test_multistep_lr_at_chosen_epochs(epoch, lr):
    opt = options("multistep", epochs=240, decay_epochs="60,120,180")  # --lr_decay_epochs is not read
    assert scheduled_lr(epoch, 0.1, opt) == pytest.approx(lr, rel=1e-12)


def test_multistep_is_torchs_multistep_stepped_once_per_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=[149, 179, 209, 239], gamma=0.1)
    reference = []
    for _ in range(240):
        reference.append(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    assert lrs(options("multistep", epochs=240)) == pytest.approx(reference, rel=1e-9)


def test_step_is_repdistillers_schedule_unchanged():
    got = lrs(options("step", learning_rate=0.05, epochs=240))
    assert got[:150] == [0.05] * 150
    assert got[150:] == [0.05 * 0.1] * 30 + [0.05 * 0.1 ** 2] * 30 + [0.05 * 0.1 ** 3] * 30


def test_byot_warm_up_per_epoch():
    # BYOT's adjust_learning_rate with --warm-up, 0-indexed epoch e: 0.01 if e < 1, else 0.1 / 0.01 / 0.001 / 0.0001
    # from e = 0 / 75 / 130 / 180 on
    opt = options("step", warm_up=True, decay_epochs="75,130,180")
    expected = [0.01] + [0.1] * 74 + [0.01] * 55 + [0.001] * 50 + [0.0001] * 20
    assert lrs(opt) == pytest.approx(expected, rel=1e-12)
    # without it, the first epoch has the full rate and nothing else changes
    plain = lrs(options("step", decay_epochs="75,130,180"))
    assert plain[0] == 0.1 and plain[1:] == lrs(opt)[1:]


def test_warm_up_is_the_constant_0_01_then_any_schedule():
    # BYOT sets 0.01 whatever --lr is; under torchrun it scales with the learning rate (here 2 processes)
    assert scheduled_lr(1, 0.05, options(warm_up=True, learning_rate=0.05)) == 0.01
    assert scheduled_lr(1, 0.2, options(warm_up=True, learning_rate=0.1)) == pytest.approx(0.02, rel=1e-12)
    cosine = options("cosine", warm_up=True, epochs=10)
    assert scheduled_lr(1, 0.1, cosine) == 0.01
    assert scheduled_lr(2, 0.1, cosine) == pytest.approx(0.1 * (1 + math.cos(math.pi / 10)) / 2, rel=1e-12)


def test_adjust_learning_rate_uses_the_schedule_for_every_group():
    sgd = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                           {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)
    assert adjust_learning_rate(101, options("cosine"), sgd) == pytest.approx(0.05, rel=1e-12)
    assert [g["lr"] for g in sgd.param_groups] == [pytest.approx(0.05, rel=1e-12)] * 2
