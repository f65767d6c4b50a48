"""convert.py and validation.py on re-parameterised (KDrefine) checkpoints."""
import os

import h5py
import pytest
import torch

import convert
import validation
from helper.checkpoint import load_checkpoint, save_checkpoint
from models import build_model
from models.represnet import represnet20
from tests.bn_calibration import realistic_bn


def _train_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    model = realistic_bn(represnet20())
    save_checkpoint({"epoch": 1, "model": model.state_dict()}, path)
    return model


def test_convert_and_validation_round_trip(tiny_cifar, tmp_path, capsys):
    last = str(tmp_path / "represnet20_last.pth")
    deploy = str(tmp_path / "represnet20_deploy.pth")
    model = _train_checkpoint(last)
    res = convert.main(["--arch", "represnet20", "--blocktype", "AMBB", "--load", last, "--save", deploy])
    assert res["params_before"] == 997_684 and res["params_after"] == 277_636
    assert res["max_abs_diff"] < 1e-5
    state = load_checkpoint(deploy)  # weights_only load
    assert set(state) == {"model"}
    assert any(k.endswith("tdb_reparam.weight") for k in state["model"])
    assert not any("duplicate" in k for k in state["model"])
    fused_keys = set(build_model("represnet20", deploy=True).state_dict())
    assert set(state["model"]) == fused_keys

    data = ["--dataset", "cifar100", "--data_root", tiny_cifar, "--device", "cpu"]
    v_dep = validation.main(["--model", "represnet20", "--model_path", deploy, "--blocktype", "AMBB",
                             "--deploy_flag", "True"] + data)
    v_train = validation.main(["--model", "represnet20", "--model_path", last, "--blocktype", "AMBB",
                               "--deploy_flag", "False"] + data)
    assert v_dep["deploy"] and not v_train["deploy"]
    assert v_dep["params"] == 277_636 and v_train["params"] == 997_684
    assert v_dep["acc"] == v_train["acc"] and v_dep["acc_top5"] == v_train["acc_top5"]
    assert v_dep["loss"] == pytest.approx(v_train["loss"], abs=1e-5)
    # left out, the form is read from the keys; the README's older block name is accepted
    v_auto = validation.main(["--model", "represnet20", "--model_path", deploy, "-t", "ACTDB"] + data)
    assert v_auto["deploy"] and v_auto["acc"] == v_dep["acc"]
    # a real boolean: False builds the multi-branch model, which a fused file does not fit
    with pytest.raises(ValueError, match="does not fit architecture 'represnet20'"):
        validation.main(["--model", "represnet20", "--model_path", deploy, "--deploy_flag", "False"] + data)
    with pytest.raises(ValueError, match="does not fit"):
        validation.main(["--model", "represnet20", "--model_path", last, "--deploy_flag", "True"] + data)
    assert "top-1" in capsys.readouterr().out

    # the deploy weights reproduce the trained model's logits in eval mode
    fused = build_model("represnet20", deploy=True)
    fused.load_state_dict(state["model"])
    fused.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (fused(x) - model.eval()(x)).abs().max().item() < 1e-5


def test_convert_reads_hdf5_state_dict_key_and_module_prefix(tmp_path):
    model = _train_checkpoint(str(tmp_path / "unused.pth"), seed=3)
    sd = model.state_dict()
    h5 = str(tmp_path / "weights.hdf5")
    with h5py.File(h5, "w") as f:
        for k, v in sd.items():
            f.create_dataset(k, data=v.numpy())
    wrapped = str(tmp_path / "dp.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    outs = []
    for i, src in enumerate((h5, wrapped)):
        dst = str(tmp_path / f"deploy_{i}.pth")
        res = convert.main(["-a", "represnet20", "-t", "AMBB", "--load", src, "--save", dst])
        assert res["max_abs_diff"] < 1e-5
        outs.append(load_checkpoint(dst)["model"])
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k]), k
    with pytest.raises(FileNotFoundError):
        convert.main(["-a", "represnet20", "--load", str(tmp_path / "none.pth"), "--save", str(tmp_path / "x.pth")])
    assert not os.path.exists(tmp_path / "x.pth")
