"""scripts/weight_hashes.py: the behaviour check of refactors (hashes of final weights of fixed CPU runs)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import weight_hashes  # noqa: E402


def test_the_hash_depends_on_values_names_and_dtypes_not_on_order_or_layout():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    state = {"conv.weight": w, "fc.bias": torch.zeros(5), "bn.num_batches_tracked": torch.tensor(3)}
    reference = weight_hashes.state_dict_sha256(state)
    reordered = {"bn.num_batches_tracked": torch.tensor(3), "fc.bias": torch.zeros(5),
                 "conv.weight": w.to(memory_format=torch.channels_last)}
    assert weight_hashes.state_dict_sha256(reordered) == reference
    changed = dict(state, **{"fc.bias": torch.tensor([0.0, 0, 0, 0, 1e-7])})
    assert weight_hashes.state_dict_sha256(changed) != reference
    assert weight_hashes.state_dict_sha256(dict(state, **{"fc.bias": torch.zeros(5, dtype=torch.float64)})) != reference
    assert weight_hashes.state_dict_sha256(dict(state, **{"bn.num_batches_tracked": torch.tensor(4)})) != reference
    renamed = {"fc.b" if k == "fc.bias" else k: v for k, v in state.items()}
    assert weight_hashes.state_dict_sha256(renamed) != reference


def test_an_unknown_run_name_is_refused_with_the_names():
    with pytest.raises(SystemExit, match=r"error: --only nope: no such run; choose from teacher, kd, crd"):
        weight_hashes.main(["--only", "kd,nope"])


@pytest.mark.slow
def test_a_run_prints_the_hash_of_the_weights_it_left(tmp_path, capsys):
    assert weight_hashes.main(["--only", "kd", "--keep", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["teacher", "kd"]
    name, rel, digest = lines[1].split()
    assert rel.endswith("resnet8_last.pth")
    state = torch.load(os.path.join(tmp_path, rel), weights_only=True)["model"]
    assert digest == weight_hashes.state_dict_sha256(state) and len(digest) == 64
