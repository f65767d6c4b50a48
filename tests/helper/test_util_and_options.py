"""The lr schedule and accuracy (helper/util.py) and str2bool (helper/option.py)."""
import types

import pytest
import torch

from helper.option import str2bool
from helper.util import accuracy, adjust_learning_rate, lr_at


@pytest.mark.parametrize("epoch,expected", [
    (1, 0.05), (150, 0.05), (151, 0.005), (180, 0.005), (181, 0.0005), (210, 0.0005), (211, 0.00005),
    (240, 0.00005)])
def test_repdistiller_step_schedule(epoch, expected):
    assert lr_at(epoch, 0.05, [150, 180, 210], 0.1) == pytest.approx(expected, rel=1e-12)


def test_adjust_learning_rate_sets_every_group():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)
    o = types.SimpleNamespace(learning_rate=0.05, lr_decay_epochs="150,180,210", lr_decay_rate=0.1,
                              lr_schedule="step", warm_up=False, epochs=240)
    assert adjust_learning_rate(181, o, opt) == pytest.approx(0.0005)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.0005)] * 2



    # the loss weights the method's defaults give: tests/assembly/test_precedence.py



def test_accuracy_topk():
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 1, 0])
    top1, top2 = accuracy(out, y, topk=(1, 2))
    assert top1.item() == pytest.approx(100 / 3)
    assert top2.item() == pytest.approx(200 / 3)


def test_str2bool_is_a_real_boolean():
    assert str2bool("False") is False and str2bool("True") is True and str2bool("0") is False
    with pytest.raises(Exception):
        str2bool("maybe")
