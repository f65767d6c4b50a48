"""docs/developer.md's "Adding a method" example is complete: the class alone gives a working --distill value."""
import os
import re

import torch

import distiller_zoo
import train_student
from distiller_zoo import POST, Distiller, register
from helper.checkpoint import save_checkpoint
from helper.option import Option
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def example_source() -> str:
    text = open(os.path.join(ROOT, "docs", "developer.md")).read()
    section = text.split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_method_trains_from_the_command_line(tiny_cifar, tmp_path):
    source = example_source()
    assert len(source.strip().splitlines()) <= 15
    namespace = {"register": register, "Distiller": Distiller, "Option": Option, "POST": POST}
    exec(compile(source, "docs/developer.md", "exec"), namespace)
    try:
        method = distiller_zoo.REGISTRY["mykd"]
        assert [o.name for o in method.options][-1] == "my_weight"
        path_t = str(tmp_path / "resnet8_vanilla" / "ckpt_epoch_1.pth")
        save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path_t)
        res = train_student.main(["--path_t", path_t, "--distill", "mykd", "--my_weight", "2", "--model_s", "resnet8",
                                  "--dataset", "cifar100", "--data_root", tiny_cifar, "--save_dir", str(tmp_path),
                                  "--epochs", "1", "--batch_size", "64", "--device", "cpu"])
        assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_mykd_r_1.0_a_0.9_b_1.0_1"
        state = torch.load(os.path.join(res["run_dir"], "resnet8_last.pth"), weights_only=True)
        assert state["opt"]["my_weight"] == 2.0 and state["epoch"] == 1
    finally:
        del distiller_zoo.REGISTRY["mykd"]
