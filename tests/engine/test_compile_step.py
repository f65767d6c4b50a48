"""--compile: the whole student step is compiled, and every instance and variant keeps its graphs.

Dynamo's capture is what these tests check, so they compile with the "eager"/"aot_eager" backends (the same
graphs, guards and caches as inductor, without minutes of C++ code generation per graph on a small CPU).
"""
import copy
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import distiller_zoo
import engine.compile as compile_module
from distiller_zoo import build_distiller
from distiller_zoo.base import Batch
from engine.compile import compile_step, reserve_compiled_graphs
from engine.fit import build_optimizer
from engine.forward import forward
from engine.step import StudentStep, loss_weights, optimize
from models import build_model
from tests.conftest import common_args
from tests.engine.built import method_context, student_options

CPU = torch.device("cpu")


def options(**kw):
    base = dict(gamma=0.1, alpha=0.9, beta=0.0, kd_T=4.0, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                nesterov=False, amp=False, channels_last=None, compile=True, compile_mode="auto", seed=0,
                data_seed=0, batch_size=8, epochs=2, dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup=20, device="cpu")
    base.update(kw)
    return student_options(**base)


@pytest.fixture
def backend(monkeypatch):
    def use(name):
        monkeypatch.setattr(compile_module, "COMPILE_BACKEND", name)
        torch._dynamo.reset()
    yield use
    torch._dynamo.reset()


class DynamoWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def dynamo_warnings():
    handler = DynamoWarnings()
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_graph_limit_grows_with_every_compiled_instance(monkeypatch):
    monkeypatch.setattr(compile_module, "compiled_instances", 0)
    config = torch._dynamo.config
    with config.patch(recompile_limit=8, accumulated_recompile_limit=256):
        per = compile_module.GRAPHS_PER_COMPILED_INSTANCE
        assert per == 2 * 3 * 2  # train/eval x (logits, is_feat, is_feat+preact) x (full, last batch)
        assert reserve_compiled_graphs(1) == 12  # above the default 8 already
        assert reserve_compiled_graphs(30) == 31 * 12
        assert config.accumulated_recompile_limit == 372  # 31 instances exceed the default 256 too
    with config.patch(recompile_limit=1000):
        assert reserve_compiled_graphs(1) == 1000  # a limit set higher by the user stays


def linear_steps(n):
    """``n`` steps of one tiny linear student with different CE weights: a distinct graph each."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    opt = options(distill="ce")
    distiller = build_distiller("ce", method_context(distiller_zoo.REGISTRY["ce"], opt, student, None, num_classes=5))
    return [StudentStep(copy.deepcopy(student), copy.deepcopy(distiller)) for _ in range(n)]


@pytest.mark.parametrize("fixed", [True, False])
def test_many_compiled_steps_keep_their_graphs(backend, dynamo_warnings, monkeypatch, fixed):
    backend("eager")
    if not fixed:  # what happened before: every instance beyond the 8th ran eagerly for the rest of the run
        monkeypatch.setattr(compile_module, "reserve_compiled_graphs", lambda instances: 8)
    steps = linear_steps(10)
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(4, 3, 2, 2, generator=g), torch.randint(0, 5, (4,), generator=g), torch.arange(4))
    with torch._dynamo.config.patch(recompile_limit=8, accumulated_recompile_limit=256):
        for i, step in enumerate(steps):
            compile_step(step, options(), CPU)
            weights = {"ce": 0.5 + i, "kl": 0.0, "kd": 0.0}
            loss, _, logits = step(batch.x, None, batch, 1, weights)
            expected = weights["ce"] * nn.functional.cross_entropy(logits, batch.y)
            torch.testing.assert_close(loss, expected)
    hit = [m for m in dynamo_warnings if "recompile_limit" in m]
    assert (hit == []) if fixed else hit, dynamo_warnings


def kd_like(method, seed=0):
    torch.manual_seed(seed)
    opt = options(gamma=1.0, alpha=0.0, beta=1.0) if method == "dkd" else options()
    student = build_model("resnet8", num_classes=10)
    teacher = build_model("resnet8", num_classes=10).eval()
    distiller = build_distiller(method, method_context(distiller_zoo.REGISTRY[method], opt, student, teacher,
                                                       num_classes=10))
    return opt, student, teacher, distiller


def test_compiled_step_matches_eager_and_dkd_compiles_once_for_all_epochs(backend):
    backend("aot_eager")
    from torch._dynamo.utils import counters

    opt, student, teacher, distiller = kd_like("dkd")
    student_c, distiller_c = copy.deepcopy((student, distiller))
    eager, compiled = StudentStep(student, distiller), StudentStep(student_c, distiller_c)
    compile_step(compiled, opt, CPU)
    sgd, sgd_c = build_optimizer(student, distiller, opt, CPU), build_optimizer(student_c, distiller_c, opt, CPU)
    w = loss_weights(opt)
    counters.clear()
    for epoch in (1, 2, 7, 30):  # DKD's warm-up factor min(epoch / 20, 1) changes with the epoch
        g = torch.Generator().manual_seed(epoch)
        b = Batch(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g), torch.arange(8))
        with torch.no_grad():
            out_t = forward(teacher, b.x)
        loss, terms, _ = optimize(eager, sgd, b.x, out_t, b, epoch, w, opt, CPU)
        loss_c, terms_c, _ = optimize(compiled, sgd_c, b.x, out_t, b, epoch, w, opt, CPU)
        torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(terms_c["kd"], terms["kd"], rtol=1e-5, atol=1e-6)
    # one graph serves every epoch: the epoch enters as a tensor, not as a constant
    assert counters["stats"]["unique_graphs"] == 1
    for (k, p), (k_c, p_c) in zip(student.state_dict().items(), student_c.state_dict().items()):
        assert k == k_c  # the student is not wrapped: RepDistiller's keys
        torch.testing.assert_close(p_c, p, rtol=1e-4, atol=1e-5, msg=k)


def test_step_stays_eager_without_compile_or_under_torchrun(monkeypatch):
    opt, student, _, distiller = kd_like("kd")
    step = StudentStep(student, distiller)
    compile_step(step, options(compile=False), CPU)
    assert step.compiled is None
    monkeypatch.setattr(compile_module, "current_env", lambda: SimpleNamespace(enabled=True))
    compile_step(step, opt, CPU)
    assert step.compiled is None


@pytest.mark.slow
def test_side_by_side_compiled_methods_log_no_recompile_limit(backend, dynamo_warnings, tiny_cifar, tmp_path):
    """Five methods x two batch shapes are ten graphs of the one step function: more than dynamo's default 8."""
    import train_student
    from helper.checkpoint import save_checkpoint

    backend("eager")
    path_t = str(tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth")
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict(), "epoch": 240}, path_t)
    # 300 training images at batch 32: nine full batches and one of 12 every epoch
    train_student.main(common_args(tiny_cifar, tmp_path / "save") + [
        "--path_t", path_t, "--model_s", "resnet8", "--distill", "kd,crd,attention,similarity,pkt",
        "--nce_k", "40", "--compile"])
    assert not [m for m in dynamo_warnings if "recompile_limit" in m], dynamo_warnings
