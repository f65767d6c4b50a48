"""helper/multihead.py: per-exit evaluation, the exit ensemble and the best-epoch row."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helper.multihead import best_epoch_row, evaluate_exits, exits_table


def test_exit_evaluation_and_best_epoch(r18):
    from dataset.core import TensorImageSet
    torch.manual_seed(3)
    imgs = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.randint(0, 10, (10,)), (0.5,) * 3, (0.25,) * 3)
    res = evaluate_exits(r18, split, SimpleNamespace(test_batch_size=4), torch.device("cpu"))
    with torch.no_grad():
        exits = r18.eval().exit_logits(split.normalize(imgs))
    for k, z in enumerate(exits, start=1):
        assert res[f"acc_c{k}"] == pytest.approx((z.argmax(1) == split.targets).float().mean().item() * 100)
    ens = torch.stack([F.softmax(z, 1) for z in exits]).mean(0).argmax(1)
    assert res["acc_ensemble"] == pytest.approx((ens == split.targets).float().mean().item() * 100)
    assert res["acc"] == res["acc_c4"]
    assert res["loss"] == pytest.approx(F.cross_entropy(exits[-1], split.targets).item(), rel=1e-5)
    rows = [{"epoch": 1, "test_acc": 5.0, "test_acc_c1": 1.0}, {"epoch": 2, "test_acc": 7.0, "test_acc_c1": 2.0},
            {"epoch": 3, "test_acc": 7.0, "test_acc_c1": 3.0}]
    assert best_epoch_row(rows)["epoch"] == 2  # first epoch of the best deepest-exit accuracy, as is_best
    assert "Classifier 1/1" in exits_table(rows[1])
    assert not math.isnan(res["acc_top5"])
