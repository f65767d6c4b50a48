"""EMKD block composition search without training: the enumeration, the driver and the held-out split."""
import pytest
import torch

from assembly import search


def test_nominal_stage_depths():
    assert search.nominal_stage_depth("resnet110") == 18
    assert search.nominal_stage_depth("myresnet20") == 3
    assert search.nominal_stage_depth("resnet32x4") == 5
    assert search.nominal_stage_depth("resnet8x4") == 1
    assert search.nominal_stage_depth("wrn_40_2") == 6
    assert search.nominal_stage_depth("mywrn_16_2") == 2
    with pytest.raises(ValueError, match="three-stage"):
        search.nominal_stage_depth("vgg13")


def test_resnet110_to_myresnet20_search_space():
    assert search.phase1_candidates(3, 18) == [[3, 3, 3], [3, 7, 2], [3, 11, 1]]
    assert search.phase2_candidates(3, 18, 7, 2) == [[7, 6, 2], [11, 5, 2], [15, 4, 2]]
    # a deeper first stage stops at the teacher's depth
    assert search.phase2_candidates(3, 10, 7, 2) == [[7, 6, 2]]


@pytest.mark.parametrize("scores,phase2,best", [
    # [3,7,2] wins phase 1, then [11,5,2] beats it
    ({(3, 7, 2): 70.0, (11, 5, 2): 71.0}, [[7, 6, 2], [11, 5, 2], [15, 4, 2]], [11, 5, 2]),
    # [3,3,3] wins phase 1 and nothing improves: phase 2 trades from (y, z) = (3, 3)
    ({(3, 3, 3): 70.0}, [[7, 2, 3], [11, 1, 3]], [3, 3, 3]),
    # a tie keeps the earlier candidate
    ({(3, 3, 3): 70.0, (3, 7, 2): 70.0}, [[7, 2, 3], [11, 1, 3]], [3, 3, 3]),
    # [3,11,1] wins phase 1; phase 2 keeps z = 1
    ({(3, 11, 1): 60.0, (7, 10, 1): 61.0}, [[7, 10, 1], [11, 9, 1], [15, 8, 1]], [7, 10, 1]),
])
def test_search_driver_visits_both_phases(scores, phase2, best):
    visited = []

    def evaluate(depth, phase):
        visited.append((phase, depth))
        return scores.get(tuple(depth), 50.0)

    got, score, history = search.block_composition_search(3, 18, evaluate)
    assert [d for p, d in visited if p == 1] == [[3, 3, 3], [3, 7, 2], [3, 11, 1]]
    assert [d for p, d in visited if p == 2] == phase2
    assert got == best and score == scores.get(tuple(best), 50.0)
    assert [(p, d) for p, d, _ in history] == visited


def test_stratified_holdout():
    y = torch.arange(300) % 100  # 3 per class
    tr, va = search.stratified_holdout(y, 0.1, seed=0)
    assert len(va) == 30 and len(tr) == 270
    assert set(tr.tolist()).isdisjoint(va.tolist()) and sorted(tr.tolist() + va.tolist()) == list(range(300))
    assert torch.bincount(y[va], minlength=100).max() == 1
    assert torch.bincount(y[tr], minlength=100).min() >= 2  # every class keeps training samples
    again = search.stratified_holdout(y, 0.1, seed=0)
    assert torch.equal(again[1], va)
    assert not torch.equal(search.stratified_holdout(y, 0.1, seed=1)[1], va)
    # CIFAR-100 proportions: exactly 50 of each class's 500
    big = torch.arange(50_000) % 100
    _, va = search.stratified_holdout(big, 0.1, seed=0)
    assert torch.bincount(big[va]).tolist() == [50] * 100
    with pytest.raises(ValueError):
        search.stratified_holdout(y, 0.0)
    with pytest.raises(ValueError, match="no sample"):
        search.stratified_holdout(torch.arange(10), 0.5)  # one sample per class: nothing can be held out


def test_search_flags_split_from_student_flags():
    sopt, rest = search.split_argv(["--model_s", "myresnet20", "--select_on", "test", "--val_fraction", "0.2",
                                    "-a", "0"])
    assert sopt.select_on == "test" and sopt.val_fraction == 0.2
    assert rest == ["--model_s", "myresnet20", "-a", "0"]
    opt = search.search_parser().parse_args(["--select_on", "val"])
    assert opt.select_on == "val" and opt.val_fraction == 0.1 and opt.mc == 0
