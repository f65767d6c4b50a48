"""No host sync inside a training step: one per epoch is the rule (issue #10, the CUDA path).

On CUDA a ``.item()``/``float()``/``bool()`` of a device tensor, a ``.tolist()``, a boolean-mask index (its
result size is read back) or a tensor built from host data (a host->device copy) stalls the pipeline. On a
CPU these are visible as ops in a TorchDispatchMode (``.tolist()`` bypasses dispatch and is counted by a
wrapper); every method's step is run under it after one warm-up step.
"""
import collections
import contextlib
import importlib
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import distiller_zoo
from dataset.core import TensorImageSet
from distiller_zoo import DistillContext, MilestoneChecking, build_distiller
from distiller_zoo.base import Batch, Outputs
from distiller_zoo.RKD import RKDLoss
from helper import distributed as D
from helper.distributed import DistEnv
from assembly.options import parse_student_options
from distiller_zoo import POST
from engine.fit import build_optimizer
from engine.forward import forward
from engine.init_stage import run_init_stage
from engine.epoch import train_runs_one_epoch
from engine.step import StudentRun, StudentStep, loss_weights, train_step
from helper.logging import NullLogger
from models import build_model

CPU = torch.device("cpu")
N_CLASSES = 10


class SyncCounter(TorchDispatchMode):
    """Counts the ops that make a CUDA host wait for (or copy to) the device."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "_unique2",
                    "lift_fresh"):
            self.ops[name] += 1
        elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.ops["index with a boolean mask"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    counter = SyncCounter()
    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        counter.ops["tolist"] += 1
        return tolist(self)

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "tolist", counted_tolist)
        with counter:
            yield counter.ops


def options(**kw):
    """Real resolved options (what the engine reads), with small sizes and explicit loss weights."""
    base = dict(gamma=1.0, alpha=0.5, beta=1.0, kd_T=4.0, learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
                seed=0, data_seed=0, batch_size=4, epochs=1, print_freq=1, init_epochs=1, feat_dim=8, nce_k=8,
                model_s="resnet8", device="cpu")
    base.update(kw)
    return parse_student_options([a for k, v in base.items() for a in (f"--{k}", str(v))])


def tiny_set(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return TensorImageSet(x, torch.arange(n) % N_CLASSES, [0.5] * 3, [0.25] * 3)


def build(method, opt, data):
    torch.manual_seed(0)
    byot = method == "byot"
    student = build_model("multi_resnet18_kd" if byot else "resnet8", num_classes=N_CLASSES)
    teacher = None if byot else build_model("resnet8", num_classes=N_CLASSES).eval()
    name, mc = (method[:-3], True) if method.endswith("+mc") else (method, False)
    cls = distiller_zoo.REGISTRY[name]
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        feat_s = forward(student, probe, cls.student_features or POST).feats
        feat_t = None if teacher is None else forward(teacher, probe, cls.teacher_features or POST).feats

    def context(method_cls):
        return DistillContext(method_cls.select_options(opt), student, teacher, list(feat_s), feat_t,
                              train_targets=data.targets, num_classes=N_CLASSES, student_name=opt.model_s,
                              batch_size=opt.batch_size)

    distiller = build_distiller(name, context(cls))
    if mc:
        distiller = MilestoneChecking(distiller, context(MilestoneChecking))
    return student, teacher, distiller


def batch_of(data, seed, strong_view=False):
    return next(iter(data.train_batches(4, seed, 1, strong_view=strong_view)))


METHODS = sorted(set(distiller_zoo.available()) - {"ce"}) + ["ce", "kd+mc", "crd+mc"]


@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_syncs_nothing(monkeypatch, method):
    opt = options()
    data = tiny_set(40)
    student, teacher, distiller = build(method, opt, data)
    optimizer = build_optimizer(student, distiller, opt, CPU)
    step = StudentStep(student, distiller)
    weights = loss_weights(opt)
    student.train()
    distiller.train()
    # the first step fixes one-off state (CRD's normalisers, FT's frozen paraphraser)
    strong = distiller.strong_view
    train_step(batch_of(data, 0, strong), 1, student, distiller, optimizer, opt, CPU, weights, teacher, step)
    with counting_syncs(monkeypatch) as syncs:
        train_step(batch_of(data, 1, strong), 1, student, distiller, optimizer, opt, CPU, weights, teacher, step)
    assert dict(syncs) == {}


def test_making_the_strong_view_syncs_nothing(monkeypatch):
    # RandAugment + Cutout for the whole batch (MLKD's strong view): per-image choices without reading them back
    data = tiny_set(16)
    next(data.train_batches(8, 0, 1, strong_view=True))  # its constants reach the device once per process
    with counting_syncs(monkeypatch) as syncs:
        batches = list(data.train_batches(8, 0, 1, strong_view=True))
    assert len(batches) == 2 and all(b.x_strong is not None for b in batches)
    assert dict(syncs) == {}


def one_epoch_syncs(monkeypatch, n_batches, method="crd"):
    opt = options(batch_size=40 // n_batches)
    data = tiny_set(40)
    student, teacher, distiller = build(method, opt, data)
    run = StudentRun(opt, student, distiller, optimizer=build_optimizer(student, distiller, opt, CPU),
                     step=StudentStep(student, distiller))

    class Bar:
        def update(self, n):
            pass

        def close(self):
            pass

    monkeypatch.setattr("engine.epoch.progress", lambda total, desc: Bar())  # as on a terminal
    with counting_syncs(monkeypatch) as syncs:
        train_runs_one_epoch(1, data, [run], opt, CPU, teacher)
    return dict(syncs)


def test_an_epoch_syncs_once_whatever_its_number_of_steps(monkeypatch):
    # the progress bar used to read the loss (.item()) every --print_freq steps
    two, five = one_epoch_syncs(monkeypatch, 2), one_epoch_syncs(monkeypatch, 5)
    # what the end of the epoch reads back (its metrics row), nothing per step
    assert two == five
    assert two["tolist"] >= 1


@pytest.mark.parametrize("method", ["abound", "factor", "fsp"])
def test_the_init_stage_syncs_once_per_epoch(monkeypatch, method):
    counts = []
    for n_batches in (2, 5):
        opt = options()
        data = tiny_set(4 * n_batches)
        student, teacher, distiller = build(method, opt, data)
        with counting_syncs(monkeypatch) as syncs:
            run_init_stage(opt, SimpleNamespace(train=data), student, teacher, distiller, CPU, NullLogger())
        counts.append(dict(syncs))
    # the epoch's loss row: the sample count as a tensor (host data) and one read-back
    assert counts[0] == counts[1] == {"lift_fresh": 1, "tolist": 1}


def test_the_init_stage_loss_is_the_sample_weighted_mean(monkeypatch):
    opt = options()
    data = tiny_set(10)  # batches of 4, 4 and 2
    student, teacher, distiller = build("fsp", opt, data)
    rows = []

    class Logger(NullLogger):
        def log(self, row, prefix=""):
            rows.append(row)

    losses = []
    init_loss = distiller.float32_init_loss

    def recording(out_s, out_t, batch):
        loss = init_loss(out_s, out_t, batch)
        losses.append((loss.item(), batch.y.shape[0]))
        return loss

    monkeypatch.setattr(distiller, "float32_init_loss", recording)
    run_init_stage(opt, SimpleNamespace(train=data), student, teacher, distiller, CPU, Logger())
    assert [n for _, n in losses] == [4, 4, 2]
    expected = sum(v * n for v, n in losses) / 10
    assert rows[0]["init_train_loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("b,dim,duplicate", [(2, 8, False), (3, 5, True), (16, 64, False), (64, 128, True),
                                             (127, 256, False)])
def test_rkd_normalised_distances_need_no_boolean_index(monkeypatch, b, dim, duplicate):
    g = torch.Generator().manual_seed(b)
    e = torch.randn(b, dim, generator=g) * 3
    if duplicate:
        e[1] = e[0]  # a zero distance, clamped to sqrt(eps): still selected by d > 0
    with counting_syncs(monkeypatch) as syncs:
        got = RKDLoss()._normalised_distances(e)
    assert dict(syncs) == {}
    d = RKDLoss.pdist(e)
    reference = d / d[d > 0].mean()  # RepDistiller's form
    assert torch.equal(got, reference)  # the same entries averaged in the same order: bit for bit


class FakeGroup:
    """Two processes as seen from rank 0, both holding the same rows; counts the collectives."""

    def __init__(self, monkeypatch):
        self.calls = collections.Counter()
        env = DistEnv(rank=0, world_size=2)
        monkeypatch.setattr(D, "_active", lambda: True)
        monkeypatch.setattr(D.dist, "get_world_size", lambda *a: 2)
        monkeypatch.setattr(D.dist, "get_rank", lambda *a: 0)
        monkeypatch.setattr(D.dist, "all_gather", self.all_gather)
        monkeypatch.setattr("crd.memory.current_env", lambda: env)
        # the module, not the class distiller_zoo exports under the same name
        monkeypatch.setattr(importlib.import_module("distiller_zoo.CRD"), "current_env", lambda: env)
        monkeypatch.setattr("crd.memory.all_reduce_sum", self.all_reduce_sum)

    def all_gather(self, outputs, tensor):
        self.calls["all_gather"] += 1
        for out in outputs:
            out.copy_(tensor)

    def all_reduce_sum(self, t):
        self.calls["all_reduce"] += 1
        return t * 2


def test_ddp_crd_exchanges_no_sizes_and_reduces_z_once(monkeypatch):
    opt = options()
    data = tiny_set(40)
    _, _, crd = build("crd", opt, data)
    group = FakeGroup(monkeypatch)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        index = torch.randperm(40, generator=g)[:8]
        y = data.targets[index]
        batch = Batch(None, y[:4], index[:4], global_index=index, global_y=y, shard=(0, 4))
        out_s = Outputs(torch.zeros(4, N_CLASSES), [torch.randn(4, 64, generator=g)])
        out_t = Outputs(torch.zeros(4, N_CLASSES), [torch.randn(4, 64, generator=g)])
        with counting_syncs(monkeypatch) as syncs:
            crd.method_loss(out_s, out_t, batch, 1)
        assert dict(syncs) == {}
        if step == 0:
            z = crd.criterion.contrast.params[2:4].clone()
            assert (z > 0).all()
    # one gather per bank update (student rows, teacher rows, labels), no size exchange; Z once
    assert group.calls == {"all_gather": 9, "all_reduce": 1}
    assert torch.equal(crd.criterion.contrast.params[2:4], z)


def test_a_loaded_state_dict_is_checked_for_z_again(monkeypatch):
    opt = options()
    data = tiny_set(40)
    _, _, crd = build("crd", opt, data)
    memory = crd.criterion.contrast
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    fresh = {k: t.clone() for k, t in memory.state_dict().items()}  # Z not set yet
    memory(v, v, torch.arange(4), torch.arange(4)[:, None].expand(4, 9).contiguous())
    assert (memory.params[2:4] > 0).all()
    memory.load_state_dict(fresh)
    memory(v, v, torch.arange(4), torch.arange(4)[:, None].expand(4, 9).contiguous())
    assert (memory.params[2:4] > 0).all()  # Z taken again from the first batch after the load


def test_all_gather_rows_refuses_counts_that_do_not_fit(monkeypatch):
    FakeGroup(monkeypatch)
    with pytest.raises(ValueError, match=r"counts \[3, 4\] do not fit 2 ranks with 4 rows on rank 0"):
        D.all_gather_rows(torch.zeros(4, 2), [3, 4])
