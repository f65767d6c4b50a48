"""setup_run on a (pretend) CUDA device, checked on a CPU (issue #10, the CUDA path): TF32 and the current
device."""
import dataclasses

import pytest
import torch

import helper.run as run
from assembly.options import parse_teacher_options
from helper.distributed import DistEnv


@pytest.fixture
def cuda_flags(monkeypatch):
    """setup_run on a pretend CUDA device, with torch's global backend flags restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    monkeypatch.setattr(run, "init_distributed", lambda name: (DistEnv(), torch.device(name)))
    yield lambda: (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def on_cuda(argv):
    """Options parsed on this (CPU) machine, then pointed at a (pretend) CUDA device."""
    return dataclasses.replace(parse_teacher_options(["--device", "cpu"] + argv), device="cuda")


def test_tf32_is_on_by_default_on_cuda(cuda_flags):
    opt = on_cuda([])
    assert opt.tf32 is True
    run.setup_run(opt)
    assert cuda_flags() == (True, True)


def test_tf32_0_keeps_full_float32_on_cuda(cuda_flags):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    run.setup_run(on_cuda(["--tf32", "0"]))
    assert cuda_flags() == (False, False)


def test_an_indexed_cuda_device_becomes_the_current_one(cuda_flags, monkeypatch):
    # the checkpoints hold the current device's RNG state (helper.checkpoint.rng_state)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    opt = dataclasses.replace(on_cuda([]), device="cuda:1")
    run.setup_run(opt)
    assert chosen == [torch.device("cuda", 1)]


def test_tf32_does_nothing_on_a_cpu(cuda_flags):
    run.setup_run(parse_teacher_options(["--device", "cpu"]))
    assert cuda_flags() == (False, False)
