"""Checkpoint files that cannot be used: one line saying what the file is; atomic, durable writes."""
import errno
import os
import pickle

import pytest
import torch

from helper import checkpoint
from helper.checkpoint import load_checkpoint, load_weights, remove_stale_temporaries, save_checkpoint
from assembly.deploy import read_weights
from engine.teacher import resolve_teacher_paths, teacher_name_from_path
from models import build_model


class RunsShell:
    """Pickles to a call of os.system: what a malicious 'weights' file does."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def tiny_state():
    return {"epoch": 1, "model": {"w": torch.arange(6.0)}}


def write_bad_file(folder, kind) -> str:
    path = str(folder / f"{kind}.pth")
    if kind == "empty":
        open(path, "wb").close()
    elif kind == "html":
        with open(path, "w") as f:
            f.write("<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    elif kind == "truncated_zip":
        good = str(folder / "good.pth")
        torch.save(tiny_state(), good)
        data = open(good, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif kind == "truncated_legacy":
        good = str(folder / "good_legacy.pth")
        torch.save(tiny_state(), good, _use_new_zipfile_serialization=False)
        data = open(good, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif kind == "malicious_zip":
        torch.save({"model": RunsShell()}, path)
    elif kind == "malicious_pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": RunsShell()}, f, protocol=4)
    return path


SYSTEM = f"{os.system.__module__}.system"  # posix.system (nt.system on Windows)
EXPECTED = {
    "empty": "'{p}' is empty (0 bytes; an interrupted copy or download?)",
    "html": "'{p}' is not a PyTorch checkpoint (starts with '<!DOCTYPE html>': a web page?)",
    "truncated_zip": "'{p}' is truncated ({n:,} bytes; an interrupted download or copy?)",
    "truncated_legacy": "'{p}' is truncated ({n:,} bytes; an interrupted download or copy?)",
    "malicious_zip": f"refused: loading '{{p}}' would call {SYSTEM}, which a weights file never does; nothing was run",
    "malicious_pickle": f"refused: loading '{{p}}' would call {SYSTEM}, which a weights file never does; "
                        "nothing was run",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_unloadable_checkpoint_is_named_in_one_line(tmp_path, kind):
    path = write_bad_file(tmp_path, kind)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert str(e.value) == EXPECTED[kind].format(p=path, n=os.path.getsize(path))
    assert "weights_only" not in str(e.value)


def test_malicious_checkpoint_runs_nothing(tmp_path, monkeypatch):
    path = write_bad_file(tmp_path, "malicious_pickle")
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    with pytest.raises(ValueError, match="^refused: "):
        load_checkpoint(path)
    assert calls == []


def test_convert_reads_weights_with_the_same_diagnosis(tmp_path):
    path = write_bad_file(tmp_path, "html")
    with pytest.raises(ValueError, match=r"is not a PyTorch checkpoint \(starts with '<!DOCTYPE html>'"):
        read_weights(path)


def test_folder_given_as_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"^'{tmp_path}' is a folder, not a checkpoint file$"):
        load_checkpoint(str(tmp_path))


def test_path_t_folder_suggests_its_checkpoints(tmp_path):
    run = tmp_path / "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"
    run.mkdir()
    for name in ("ckpt_epoch_1.pth", "ckpt_epoch_2.pth", "resnet8_best.pth", "resnet8_last.pth"):
        save_checkpoint(tiny_state(), str(run / name))
    expected = (f"--path_t '{run}' is a folder; pass a checkpoint file in it, e.g. '{run / 'resnet8_best.pth'}' or "
                f"'{run / 'ckpt_epoch_2.pth'}', or keep the folder and add --teacher_epochs 2 (ckpt_epoch_N.pth "
                f"epochs there: 1, 2)")
    with pytest.raises(IsADirectoryError) as e:
        resolve_teacher_paths(str(run))
    assert str(e.value) == expected
    with pytest.raises(IsADirectoryError) as e:
        teacher_name_from_path(str(run))  # search.py's path; it used to parse the parent folder's name
    assert str(e.value) == expected


def test_path_t_empty_folder(tmp_path):
    with pytest.raises(IsADirectoryError) as e:
        resolve_teacher_paths(str(tmp_path))
    assert str(e.value) == (f"--path_t '{tmp_path}' is a folder; it holds no .pth file; pass a checkpoint file, or "
                            "give a folder of ckpt_epoch_N.pth snapshots with --teacher_epochs N")


def test_mismatch_message_is_one_short_line(tmp_path):
    sd = build_model("resnet8", num_classes=100).state_dict()
    with pytest.raises(ValueError) as e:
        load_weights(build_model("resnet14", num_classes=100), {"model": sd}, "resnet14", source="'w.pth'")
    own = build_model("resnet14", num_classes=100).state_dict()
    n_missing = len(set(own) - set(sd))
    first = next(k for k in own if k not in sd)
    assert str(e.value) == (f"'w.pth' does not fit architecture 'resnet14' ({n_missing} missing keys, first {first}); "
                            "check --model/--model_t and the number of classes of the data set")
    assert len(str(e.value)) < 200


def test_full_disk_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "resnet8_last.pth")
    save_checkpoint({"epoch": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError) as e:
        save_checkpoint({"epoch": 2}, path)
    assert e.value.errno == errno.ENOSPC
    assert e.value.strerror == (f"could not write '{path}': no space left on device; the earlier checkpoints are "
                                "intact; free space, then --resume auto")
    assert os.listdir(tmp_path) == ["resnet8_last.pth"]  # the temporary file is gone
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}


def test_checkpoint_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") else fd))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    save_checkpoint({"epoch": 1}, str(tmp_path / "a.pth"))
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    if os.path.isdir("/proc/self/fd"):
        tmp = events[1][1]
        assert os.path.basename(tmp).startswith(".tmp_") and events[0][1] == tmp  # the file itself, then
        assert events[2][1] == os.path.realpath(tmp_path)  # its folder, so the rename is durable


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp_abc.pth").write_bytes(b"PK\x03\x04half")
    (tmp_path / "resnet8_last.pth").write_bytes(b"kept")
    assert remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / ".tmp_abc.pth")]
    assert os.listdir(tmp_path) == ["resnet8_last.pth"]


def test_convert_names_a_bad_hdf5_file_and_a_folder(tmp_path):
    path = tmp_path / "w.h5"
    path.write_text("<html></html>")
    with pytest.raises(ValueError) as e:
        read_weights(str(path))
    assert str(e.value) == f"'{path}' is not a readable HDF5 file (starts with '<html></html>': a web page?)"
    with pytest.raises(IsADirectoryError, match=f"^'{tmp_path}' is a folder, not a checkpoint file$"):
        read_weights(str(tmp_path))
