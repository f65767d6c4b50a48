import os

import pytest
import torch

from helper.checkpoint import extract_state_dict, load_checkpoint, load_weights, save_checkpoint
from engine.teacher import load_teacher
from models import build_model


def test_atomic_save_and_weights_only_load(tmp_path):
    m = build_model("resnet8", num_classes=10)
    path = str(tmp_path / "a" / "ckpt.pth")
    save_checkpoint({"epoch": 3, "model": m.state_dict(), "best_acc": 12.5}, path)
    assert sorted(os.listdir(tmp_path / "a")) == ["ckpt.pth"]  # no temp file left behind
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["best_acc"] == 12.5
    m2 = build_model("resnet8", num_classes=10)
    load_weights(m2, state, "resnet8")
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def test_weights_only_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = str(tmp_path / "evil.pth")
    torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError, match=r"^refused: .* would call (posix|nt)\.system"):
        load_checkpoint(path)


def test_repdistiller_checkpoint_with_module_prefix(tmp_path):
    m = build_model("resnet8", num_classes=100).eval()
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    folder = tmp_path / "resnet8_vanilla"
    folder.mkdir()
    torch.save({"model": sd, "epoch": 240}, folder / "ckpt_epoch_240.pth")
    t = load_teacher(str(folder / "ckpt_epoch_240.pth"), 100, torch.device("cpu"))
    assert t.arch == "resnet8" and len(t.members) == 1
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(t(x), m(x))
    assert not any(p.requires_grad for p in t.parameters())
    # state_dict key and plain state dict also accepted
    assert set(extract_state_dict({"state_dict": sd})) == set(m.state_dict())
    assert set(extract_state_dict(m.state_dict())) == set(m.state_dict())


def test_mismatching_checkpoint_names_arch_and_keys(tmp_path):
    path = str(tmp_path / "w.pth")
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path)
    with pytest.raises(ValueError) as e:
        load_weights(build_model("resnet14", num_classes=100), load_checkpoint(path), "resnet14")
    msg = str(e.value)
    assert "resnet14" in msg and "missing keys" in msg and "layer1.1" in msg
    with pytest.raises(ValueError) as e:
        load_weights(build_model("resnet8", num_classes=10), load_checkpoint(path), "resnet8")
    assert "fc.weight" in str(e.value) and "shape mismatch" in str(e.value)


def test_no_state_dict_and_missing_file(tmp_path):
    path = str(tmp_path / "x.pth")
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="no state dict"):
        extract_state_dict(load_checkpoint(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nothing.pth"))
