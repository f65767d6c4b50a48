"""Checkpoint RNG state: the current CUDA device's state only, so a checkpoint resumes on any GPU count.

No GPU is needed: torch.cuda's RNG functions are replaced by fakes that record what they are asked.
"""
import pytest
import torch

from helper.checkpoint import restore_rng_state, rng_state


class FakeCuda:
    """``device_count`` GPUs, the current one ``current``; records every state read and write."""

    def __init__(self, monkeypatch, device_count=1, current=0):
        self.device_count, self.current = device_count, current
        self.calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.device_count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.get_rng_state_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_rng_state_all)

    @staticmethod
    def state_of(device):
        return torch.full((16,), device, dtype=torch.uint8)

    def get_rng_state(self, device="cuda"):
        self.calls.append(("get", device))
        return self.state_of(device)

    def set_rng_state(self, state, device="cuda"):
        self.calls.append(("set", device, int(state[0])))

    def get_rng_state_all(self):
        self.calls.append(("get_all",))
        return [self.state_of(d) for d in range(self.device_count)]

    def set_rng_state_all(self, states):
        # what an 8-GPU list does on a machine with fewer GPUs
        if len(states) > self.device_count:
            raise IndexError("list index out of range")
        self.calls.append(("set_all", len(states)))


def test_the_checkpoint_holds_the_current_devices_state_only(monkeypatch):
    cuda = FakeCuda(monkeypatch, device_count=8, current=3)  # torchrun rank 3 of an 8-GPU node
    state = rng_state()
    assert cuda.calls == [("get", 3)]
    assert torch.equal(state["cuda"], FakeCuda.state_of(3))
    assert torch.equal(state["torch"], torch.get_rng_state())


def test_the_state_is_restored_on_the_current_device(monkeypatch):
    cuda = FakeCuda(monkeypatch, device_count=8, current=3)
    saved = rng_state()
    cuda.calls.clear()
    other = FakeCuda(monkeypatch, device_count=1, current=0)  # resumed on a 1-GPU machine
    restore_rng_state(saved)
    assert other.calls == [("set", 0, 3)]


@pytest.mark.parametrize("current,expected", [(0, 0), (5, 5)])
def test_an_old_checkpoint_with_one_state_per_gpu_restores_the_matching_entry(monkeypatch, current, expected):
    cuda = FakeCuda(monkeypatch, device_count=8, current=current)
    old = {"torch": torch.get_rng_state(), "cuda": [FakeCuda.state_of(d) for d in range(8)]}
    restore_rng_state(old)
    assert cuda.calls == [("set", current, expected)]


def test_an_eight_gpu_list_restores_on_a_one_gpu_machine(monkeypatch):
    cuda = FakeCuda(monkeypatch, device_count=1, current=0)
    old = {"torch": torch.get_rng_state(), "cuda": [FakeCuda.state_of(d) for d in range(8)]}
    restore_rng_state(old)  # set_rng_state_all would raise IndexError here
    assert cuda.calls == [("set", 0, 0)]


def test_an_old_list_shorter_than_the_device_index_falls_back_to_its_first_entry(monkeypatch):
    cuda = FakeCuda(monkeypatch, device_count=4, current=2)
    old = {"torch": torch.get_rng_state(), "cuda": [FakeCuda.state_of(7)]}  # written on a 1-GPU machine
    restore_rng_state(old)
    assert cuda.calls == [("set", 2, 7)]


def test_the_cpu_state_is_restored_too(monkeypatch):
    FakeCuda(monkeypatch)
    saved = rng_state()
    first = torch.rand(3)
    restore_rng_state(saved)
    assert torch.equal(torch.rand(3), first)
