"""A damaged CIFAR batch file: one line naming the file and the archive to re-extract."""
import os
import pickle

import numpy as np
import pytest

from dataset.cifar import load_cifar100, write_cifar_format


SYSTEM = f"{os.system.__module__}.system"  # posix.system (nt.system on Windows)


class RunsShell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture
def cifar_root(tmp_path):
    x = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    y = np.arange(4)
    write_cifar_format(str(tmp_path), "cifar100", x, y, x, y)
    return tmp_path


def test_truncated_batch_file(cifar_root):
    path = cifar_root / "cifar-100-python" / "train"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        load_cifar100(str(cifar_root))
    assert str(e.value) == (f"'{path}' is truncated ({len(data) // 2:,} bytes); re-extract the archive "
                            "cifar-100-python.tar.gz")


def test_batch_file_that_would_run_code(cifar_root, monkeypatch):
    path = cifar_root / "cifar-100-python" / "train"
    with open(path, "wb") as f:
        pickle.dump({b"data": RunsShell()}, f)
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    with pytest.raises(ValueError) as e:
        load_cifar100(str(cifar_root))
    assert str(e.value) == (f"refused: '{path}' would call {SYSTEM}, which a CIFAR batch file "
                            "never does (nothing was run); re-extract the archive cifar-100-python.tar.gz")
    assert calls == []


def test_batch_file_that_is_not_a_pickle(cifar_root):
    path = cifar_root / "cifar-100-python" / "test"
    path.write_bytes(b"<!DOCTYPE html>\n<html></html>\n")
    with pytest.raises(ValueError) as e:
        load_cifar100(str(cifar_root))
    assert str(e.value) == f"'{path}' is damaged (UnpicklingError); re-extract the archive cifar-100-python.tar.gz"
