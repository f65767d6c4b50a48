"""CUDA-only behaviour of the engine checked on a CPU (issue #10, the CUDA path): evaluation under CUDA graphs,
fused SGD after resuming and ICKD's tapped teacher map (TF32: tests/helper/test_cuda_setup.py; cuDNN determinism:
tests/assembly/test_cudnn_determinism.py)."""
import gc
import weakref

import pytest
import torch
import torch.nn as nn

import distiller_zoo
import engine.evaluate as evaluate_module
import engine.fit as fit_module
from dataset.core import TensorImageSet
from distiller_zoo import POST, build_distiller
from engine.evaluate import EvalSettings, validate
from engine.fit import build_optimizer, load_optimizer_state, prepare_run
from engine.forward import forward, teacher_outputs
from engine.step import StudentRun
from helper.logging import NullLogger
from tests.engine.built import method_context, student_options
from tests.methods import built_method

CPU = torch.device("cpu")


def eval_set(n=20):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return TensorImageSet(x, torch.arange(n) % 5, [0.5] * 3, [0.25] * 3)


class WatchedOutputs(nn.Module):
    """A classifier that notes, at each call, whether its previous output is still referenced by the caller
    (a CUDA-graph replay overwrites that memory)."""

    def __init__(self, multi_exit=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 5)
        self.previous = []
        self.alive_at_next_call = []
        if multi_exit:
            self.exit_logits = lambda x: [self._watch(self.fc(x.mean(dim=(2, 3)) * k)) for k in (1.0, 2.0)]

    def _watch(self, out):
        self.previous.append(weakref.ref(out))
        return out

    def _note(self):
        gc.collect()
        self.alive_at_next_call.append(any(r() is not None for r in self.previous))
        self.previous = []

    def forward(self, x):
        self._note()
        return self._watch(self.fc(x.mean(dim=(2, 3))))


def eval_options():
    return EvalSettings(amp=False, channels_last=None, test_batch_size=6, compile=True,
                        compile_mode="reduce-overhead")


@pytest.mark.parametrize("multi_exit", [False, True])
def test_validation_under_cuda_graphs_keeps_no_output_alive_into_the_next_call(monkeypatch, multi_exit):
    split = eval_set()
    plain = validate(WatchedOutputs(multi_exit), split, eval_options(), CPU)
    monkeypatch.setattr(evaluate_module, "uses_cuda_graphs", lambda opt, device: True)
    model = WatchedOutputs(multi_exit)
    if multi_exit:
        calls = []
        exits = model.exit_logits

        def noted(x):
            calls.append(None)
            model._note()
            return exits(x)

        model.exit_logits = noted
    graphs = validate(model, split, eval_options(), CPU)
    # 20 images in batches of 6: 4 calls; at none of them is the previous batch's output still referenced
    assert model.alive_at_next_call == [False] * 4
    assert graphs == plain  # the copies change no number


def test_without_cuda_graphs_float32_outputs_are_not_copied(monkeypatch):
    model = WatchedOutputs()
    validate(model, eval_set(), eval_options(), CPU)
    # .float() of a float32 output is the output itself, still referenced when the next batch runs
    assert model.alive_at_next_call == [False, True, True, True]


def test_resuming_keeps_the_optimizers_fused_kernel():
    params = [nn.Parameter(torch.randn(3))]
    fused = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)  # build_optimizer's choice on CUDA
    written_on_cpu = torch.optim.SGD([nn.Parameter(torch.randn(3))], lr=0.1, momentum=0.9).state_dict()
    assert written_on_cpu["param_groups"][0]["fused"] is None
    load_optimizer_state(fused, written_on_cpu)
    assert fused.param_groups[0]["fused"] is True
    plain = torch.optim.SGD([nn.Parameter(torch.randn(3))], lr=0.1, momentum=0.9)
    load_optimizer_state(plain, torch.optim.SGD(params, lr=0.1, fused=True).state_dict())
    assert plain.param_groups[0]["fused"] is None


def test_a_run_resumed_from_a_cpu_checkpoint_keeps_the_fused_kernel(monkeypatch, tmp_path):
    torch.manual_seed(0)
    opt = student_options(learning_rate=0.1, momentum=0.9, weight_decay=0.0, nesterov=False, compile=False,
                          sync_bn=False, lr_scale="none", kd_T=4, distill="ce", device="cpu")
    student = nn.Linear(2, 2)
    distiller = build_distiller("ce", method_context(distiller_zoo.REGISTRY["ce"], opt, student, None))
    cpu_written = build_optimizer(student, distiller, opt, CPU).state_dict()
    assert cpu_written["param_groups"][0]["fused"] is None
    path = str(tmp_path / "ckpt_epoch_3.pth")
    torch.save({"epoch": 3, "model": student.state_dict(), "distiller": distiller.state_dict(),
                "optimizer": cpu_written}, path)
    # build_optimizer's choice on CUDA (fused=True), made here on the CPU, whose SGD has a fused kernel too
    monkeypatch.setattr(fit_module, "build_optimizer", lambda student, distiller, opt, device: torch.optim.SGD(
        student.parameters(), lr=0.1, momentum=0.9, fused=True))
    r = StudentRun(opt, student, distiller, run_dir=str(tmp_path), logger=NullLogger())
    prepare_run(r, opt, None, CPU, None, quiet=True, resume_path=path)
    assert r.start_epoch == 4
    assert r.optimizer.param_groups[0]["fused"] is True


def test_ickds_tapped_wrn_teacher_map_can_be_saved_for_backward():
    student, teacher, ickd = built_method("ickd", teacher="wrn_16_2")
    x = torch.randn(4, 3, 32, 32)
    out_t = teacher_outputs(teacher, x, [POST])[POST]
    out_s = forward(student, x, POST)
    f_s, f_t = ickd.ickd_maps(out_s, out_t)
    assert not torch.is_inference(f_t)
    assert f_t.shape == (4, 128, 8, 8)
    with torch.no_grad():
        expected = torch.relu(teacher.bn1(out_t.feats[-2]))  # the tapped map: relu(bn1(block3 output))
    assert torch.equal(f_t, expected)
    w = torch.ones(1, requires_grad=True)
    (w * f_t).sum().backward()  # mul saves f_t for w's gradient: an inference tensor would raise here
    assert w.grad.item() == pytest.approx(f_t.sum().item(), rel=1e-6)
