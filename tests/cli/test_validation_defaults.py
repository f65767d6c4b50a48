"""validation.py takes what a toolkit checkpoint knows about its run (data set, my* block depth) as defaults."""
import os

import pytest

import train_teacher
import validation
from helper.checkpoint import load_checkpoint, save_checkpoint
from helper.util import device_names


def digits_run(save, model, *extra):
    argv = ["--dataset", "digits", "--epochs", "1", "--batch_size", "64", "--device", "cpu", "--save_dir",
            str(save), "--model", model, *extra]
    result = train_teacher.main(argv)
    return result, train_teacher_run_dir(save, model)


def train_teacher_run_dir(save, model):
    (folder,) = os.listdir(os.path.join(save, "models"))
    assert folder.startswith(model)
    return os.path.join(save, "models", folder)


@pytest.mark.slow
def test_a_digits_checkpoint_is_evaluated_on_digits_without_dataset_flag(tmp_path):
    result, run = digits_run(tmp_path / "save", "resnet8")
    empty_root = tmp_path / "no_cifar_here"
    empty_root.mkdir()
    res = validation.main(["--model", "resnet8", "--model_path", os.path.join(run, "resnet8_last.pth"),
                           "--data_root", str(empty_root), "--device", "cpu"])
    assert res["acc"] == pytest.approx(result["last_acc"])
    assert os.listdir(empty_root) == []  # no CIFAR-100 was looked for (or downloaded)


@pytest.mark.slow
def test_my_model_takes_the_block_depth_it_was_trained_with(tmp_path, capsys):
    result, run = digits_run(tmp_path / "save", "myresnet8", "--block_depth", "2,1,1")
    last = os.path.join(run, "myresnet8_last.pth")
    res = validation.main(["--model", "myresnet8", "--model_path", last, "--device", "cpu"])
    assert res["acc"] == pytest.approx(result["last_acc"])
    # weights without the run's options (e.g. from EMKD's own code): the error names --block_depth
    bare = str(tmp_path / "bare.pth")
    save_checkpoint({"model": load_checkpoint(last)["model"]}, bare)
    with pytest.raises(ValueError, match=r"built with --block_depth 1,1,1: give the --block_depth it was trained"):
        validation.main(["--model", "myresnet8", "--model_path", bare, "--dataset", "digits", "--device", "cpu"])
    res = validation.main(["--model", "myresnet8", "--model_path", bare, "--dataset", "digits", "--device", "cpu",
                           "--block_depth", "2,1,1"])
    assert res["acc"] == pytest.approx(result["last_acc"])


def test_an_unknown_device_is_one_error_line(tmp_path):
    with pytest.raises(ValueError, match=rf"^--device 'gpu' is not a device; use one of {', '.join(device_names())}$"):
        validation.main(["--model", "resnet8", "--model_path", str(tmp_path / "x.pth"), "--device", "gpu"])
