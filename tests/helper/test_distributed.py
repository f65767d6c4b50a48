"""helper.distributed: single-process behaviour here, collectives in 2 real gloo processes on CPU.

Starting processes costs seconds, so one module-scoped spawn runs every cross-process scenario,
each rank saves what it saw, and the tests below only compare files against single-process
references computed in the parent.
"""
import copy
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helper import distributed as D
from tests.spawn import free_port, spawn_and_wait
from models import build_model

WORLD = 2
TOL = dict(rtol=1e-5, atol=1e-5)
WORKER_TIMEOUT_S = 120

# (name, rows per rank, momentum, steps, offset of the data): uneven and empty shards, the
# cumulative average, and a large mean against which a one-pass E[x^2]-E[x]^2 would lose digits.
BN_CASES = [
    ("even", (4, 4), 0.1, 1, 0.0),
    ("uneven", (5, 3), 0.1, 2, 0.0),
    ("cumulative", (5, 3), None, 3, 0.0),
    ("empty_rank", (8, 0), 0.3, 1, 0.0),
    ("offset", (3, 5), 0.1, 1, 50.0),
]
GATHER_SHAPES = {  # rank -> rows; a rank without rows must not break the padding
    "float": ((3, 4), (2, 4)),
    "long": ((0,), (2,)),
    "bool": ((1, 2), (3, 2)),
}


def _gather_input(kind: str, rank: int) -> torch.Tensor:
    shape = GATHER_SHAPES[kind][rank]
    base = torch.arange(torch.Size(shape).numel()).view(shape) + 100 * rank
    if kind == "float":
        return base.float() / 7
    if kind == "bool":
        return base % 3 == 0
    return base.long()


def _env_tuple(env: D.DistEnv):
    # weights_only loading refuses dataclasses, so results travel as plain tuples.
    return (env.rank, env.world_size, env.local_rank)


def _bn_inputs():
    g = torch.Generator().manual_seed(0)
    cases = {}
    for name, split, momentum, steps, offset in BN_CASES:
        n, c = sum(split), 3
        cases[name] = {
            "split": split,
            "momentum": momentum,
            "weight": torch.rand(c, generator=g) + 0.5,
            "bias": torch.randn(c, generator=g),
            "x": [torch.randn(n, c, 4, 4, generator=g) * 2 + offset for _ in range(steps)],
            "g": [torch.randn(n, c, 4, 4, generator=g) for _ in range(steps)],
        }
    return cases


def _run_bn(bn: nn.BatchNorm2d, case, rows: slice):
    """Train ``bn`` on ``case``'s steps; loss = sum(y * g) so per-sample gradients just add up."""
    out = {}
    for x, g in zip(case["x"], case["g"]):
        bn.zero_grad()
        xr = x[rows].clone().requires_grad_(True)
        y = bn(xr)
        (y * g[rows]).sum().backward()
        out.update(y=y.detach(), x_grad=xr.grad, w_grad=bn.weight.grad.clone(),
                   b_grad=bn.bias.grad.clone())
    out.update(running_mean=bn.running_mean.clone(), running_var=bn.running_var.clone(),
               num_batches_tracked=bn.num_batches_tracked.clone())
    bn.eval()
    with torch.no_grad():
        out["eval_y"] = bn(case["x"][-1][rows])
    return out


def _make_bn(cls, case):
    bn = cls(3, momentum=case["momentum"])
    with torch.no_grad():
        bn.weight.copy_(case["weight"])
        bn.bias.copy_(case["bias"])
    return bn


def _ddp_step(model: nn.Module, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _worker(rank: int, port: int, workdir: str):
    torch.set_num_threads(1)
    # What torchrun would export, so init_distributed's real path is the one under test.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    inputs = torch.load(os.path.join(workdir, "inputs.pt"))
    res = {}
    env, device = D.init_distributed("cpu")
    try:
        res["env"] = _env_tuple(env)
        res["device"] = str(device)
        res["current_env"] = _env_tuple(D.current_env())
        res["lr"] = D.scaled_learning_rate(0.05, env.world_size, "linear")

        res["gather"] = {k: D.all_gather_rows(_gather_input(k, rank)) for k in GATHER_SHAPES}
        res["all_reduce"] = D.all_reduce_sum(torch.tensor([rank + 1.0, 10.0]))

        m = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        with torch.no_grad():
            m[1].running_mean.fill_(rank + 1.0)
            m[1].running_var.fill_(rank + 2.0)
            m[1].num_batches_tracked.fill_(7 + rank)
            m[0].weight.fill_(float(rank))
        # A transposed buffer takes the non-contiguous path.
        m.register_buffer("extra", (torch.arange(6.0).view(2, 3) + 10 * rank).t())
        extra_before = m.extra
        D.broadcast_buffers(m, src=0)
        res["bcast"] = {k: v.clone() for k, v in m.state_dict().items()}
        res["bcast_same_buffer_object"] = m.extra is extra_before

        res["bn"] = {}
        for name, case in inputs["bn"].items():
            lo, hi = sum(case["split"][:rank]), sum(case["split"][:rank + 1])
            bn = _make_bn(D.CrossProcessBatchNorm2d, case)
            res["bn"][name] = _run_bn(bn, case, slice(lo, hi))

        model = build_model("resnet8", num_classes=10)
        model.load_state_dict(inputs["ddp"]["state"])
        model = D.convert_sync_batchnorm(model, device)
        ddp = nn.parallel.DistributedDataParallel(model)
        lo, hi = D.shard_bounds(inputs["ddp"]["x"].shape[0], rank, WORLD)
        _ddp_step(ddp, inputs["ddp"]["x"][lo:hi], inputs["ddp"]["y"][lo:hi])
        res["ddp"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        D.barrier()
    finally:
        D.destroy()
    res["after_destroy"] = _env_tuple(D.current_env())
    torch.save(res, os.path.join(workdir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Every rank's results, from one 2-process gloo run."""
    workdir = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    ddp_model = build_model("resnet8", num_classes=10)
    inputs = {
        "bn": _bn_inputs(),
        "ddp": {"state": ddp_model.state_dict(), "x": torch.randn(8, 3, 32, 32),
                "y": torch.randint(0, 10, (8,))},
    }
    torch.save(inputs, workdir / "inputs.pt")

    spawn_and_wait(_worker, (free_port(), str(workdir)), WORLD, WORKER_TIMEOUT_S)
    results = [torch.load(workdir / f"rank{r}.pt") for r in range(WORLD)]
    return inputs, results


# ---------------------------------------------------------------- single process

@pytest.mark.parametrize("n,world", [(0, 1), (0, 3), (1, 1), (2, 5), (7, 2), (10, 3), (10, 4),
                                     (9, 3), (100, 7), (3, 8)])
def test_shard_bounds_partition(n, world):
    bounds = [D.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (_, end), (start, _) in zip(bounds, bounds[1:]):
        assert end == start  # contiguous, so every index is covered exactly once
    sizes = [e - s for s, e in bounds]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1
    expected = [len(c) for c in torch.tensor_split(torch.arange(n), world)]
    assert sizes == expected


def test_shard_bounds_rejects_bad_rank():
    with pytest.raises(ValueError):
        D.shard_bounds(10, 2, 2)
    with pytest.raises(ValueError):
        D.shard_bounds(10, -1, 2)


def test_dist_env_properties():
    assert not D.DistEnv().enabled and D.DistEnv().is_main
    env = D.DistEnv(rank=1, world_size=2, local_rank=1)
    assert env.enabled and not env.is_main


def test_scaled_learning_rate():
    assert D.scaled_learning_rate(0.05, 4, "linear") == pytest.approx(0.2)
    assert D.scaled_learning_rate(0.05, 1, "linear") == 0.05
    assert D.scaled_learning_rate(0.05, 4, "none") == 0.05
    with pytest.raises(ValueError, match="linear"):
        D.scaled_learning_rate(0.05, 4, "sqrt")


def _clear_torchrun_env(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


def test_init_distributed_single_process(monkeypatch):
    _clear_torchrun_env(monkeypatch)
    env, device = D.init_distributed("cpu")
    assert env == D.DistEnv() and device == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    env, device = D.init_distributed("cpu")
    assert env == D.DistEnv() and device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    assert D.current_env() == D.DistEnv()


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, "RANK=2"),
    ({"WORLD_SIZE": "2", "RANK": "-1", "LOCAL_RANK": "0"}, "RANK=-1"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "5"}, "LOCAL_RANK=5"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set"),
    ({"WORLD_SIZE": "two"}, "not an integer"),
    ({"WORLD_SIZE": "0"}, "at least 1"),
])
def test_init_distributed_rejects_inconsistent_env(monkeypatch, env, match):
    _clear_torchrun_env(monkeypatch)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        D.init_distributed("cpu")
    assert not torch.distributed.is_initialized()


def test_init_distributed_needs_a_gpu_per_local_rank(monkeypatch):
    _clear_torchrun_env(monkeypatch)
    n = torch.cuda.device_count()
    # One more process than GPUs: without CUDA select_device refuses, with it our check does.
    monkeypatch.setenv("WORLD_SIZE", str(n + 1))
    monkeypatch.setenv("RANK", str(n))
    monkeypatch.setenv("LOCAL_RANK", str(n))
    with pytest.raises(ValueError, match="--device cpu"):
        D.init_distributed("cuda")
    assert not torch.distributed.is_initialized()


def test_collectives_are_identities_without_a_process_group():
    t = torch.arange(6.0).view(3, 2)
    assert D.all_gather_rows(t) is t
    assert D.all_reduce_sum(t) is t and torch.equal(t, torch.arange(6.0).view(3, 2))
    m = nn.BatchNorm2d(2)
    assert D.broadcast_buffers(m) is m
    D.barrier()
    D.destroy()
    assert D.current_env() == D.DistEnv()


def test_cross_process_bn_is_batchnorm_without_a_process_group():
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4, momentum=None)
    bn = D.convert_sync_batchnorm(copy.deepcopy(ref), torch.device("cpu"))
    assert type(bn) is D.CrossProcessBatchNorm2d
    for _ in range(2):
        x = torch.randn(5, 4, 3, 3)
        assert torch.equal(bn(x), ref(x))
    for k, v in ref.state_dict().items():
        assert torch.equal(bn.state_dict()[k], v)


class _CustomBN(nn.BatchNorm2d):
    pass


def test_convert_sync_batchnorm_keeps_state_and_eval_output():
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10)
    model.train()
    with torch.no_grad():  # non-default running statistics, so copying them is actually checked
        for _ in range(2):
            model(torch.randn(4, 3, 32, 32))
    model.layer1[0].bn1.eval()  # a per-module training flag must survive the swap
    model.add_module("custom", _CustomBN(3))
    reference = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = list(model.parameters())
    n_bn = sum(type(m) is nn.BatchNorm2d for m in model.modules())

    converted = D.convert_sync_batchnorm(model, torch.device("cpu"))

    assert converted is model
    assert sum(type(m) is D.CrossProcessBatchNorm2d for m in converted.modules()) == n_bn
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert type(converted.custom) is _CustomBN  # subclasses may override forward: left alone
    after = converted.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    # The same Parameter objects, so an optimizer built before or after sees the live tensors.
    assert all(a is b for a, b in zip(converted.parameters(), params_before))
    assert len(list(converted.parameters())) == len(params_before)
    assert not converted.layer1[0].bn1.training and converted.layer1[0].bn2.training
    for m_ref, m_new in zip(reference.modules(), converted.modules()):
        if isinstance(m_ref, nn.BatchNorm2d):
            assert (m_new.eps, m_new.momentum, m_new.affine, m_new.track_running_stats) == (
                m_ref.eps, m_ref.momentum, m_ref.affine, m_ref.track_running_stats)

    reference.eval()
    converted.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(converted(x), reference(x))


# ---------------------------------------------------------------- two gloo processes

def test_workers_joined_as_torchrun_would(ranks):
    _, results = ranks
    for r, res in enumerate(results):
        assert res["env"] == (r, WORLD, r)
        assert res["current_env"] == (r, WORLD, r)
        assert res["device"] == "cpu"
        assert res["lr"] == pytest.approx(0.05 * WORLD)
        assert res["after_destroy"] == (0, 1, 0)


@pytest.mark.parametrize("kind", sorted(GATHER_SHAPES))
def test_all_gather_rows_uneven(ranks, kind):
    _, results = ranks
    expected = torch.cat([_gather_input(kind, r) for r in range(WORLD)])
    for res in results:
        got = res["gather"][kind]
        assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_all_reduce_sum(ranks):
    _, results = ranks
    for res in results:
        assert torch.equal(res["all_reduce"], torch.tensor([3.0, 20.0]))


def test_broadcast_buffers_copies_rank0(ranks):
    _, results = ranks
    r0, r1 = results[0]["bcast"], results[1]["bcast"]
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked", "extra"):
        assert torch.equal(r1[k], r0[k]), k
    assert torch.equal(r0["1.running_mean"], torch.full((3,), 1.0))
    assert torch.equal(r0["extra"], torch.arange(6.0).view(2, 3).t())
    assert int(r1["1.num_batches_tracked"]) == 7
    # Parameters are not buffers: each rank keeps its own.
    assert torch.equal(r1["0.weight"], torch.ones_like(r1["0.weight"]))
    assert all(res["bcast_same_buffer_object"] for res in results)


@pytest.mark.parametrize("case", [c[0] for c in BN_CASES])
def test_cross_process_bn_matches_full_batch(ranks, case):
    inputs, results = ranks
    spec = inputs["bn"][case]
    ref = _run_bn(_make_bn(nn.BatchNorm2d, spec), spec, slice(None))
    starts = [0]
    for n in spec["split"]:
        starts.append(starts[-1] + n)

    w_grad = sum(res["bn"][case]["w_grad"] for res in results)
    b_grad = sum(res["bn"][case]["b_grad"] for res in results)
    torch.testing.assert_close(w_grad, ref["w_grad"], **TOL)
    torch.testing.assert_close(b_grad, ref["b_grad"], **TOL)
    for r, res in enumerate(results):
        got, rows = res["bn"][case], slice(starts[r], starts[r + 1])
        torch.testing.assert_close(got["y"], ref["y"][rows], **TOL)
        torch.testing.assert_close(got["x_grad"], ref["x_grad"][rows], **TOL)
        torch.testing.assert_close(got["running_mean"], ref["running_mean"], **TOL)
        torch.testing.assert_close(got["running_var"], ref["running_var"], **TOL)
        assert torch.equal(got["num_batches_tracked"], ref["num_batches_tracked"])
        torch.testing.assert_close(got["eval_y"], ref["eval_y"][rows], **TOL)


def test_ddp_step_with_converted_bn_matches_full_batch(ranks):
    """DDP averages the ranks' gradients; with statistics over all ranks that is the full batch's."""
    inputs, results = ranks
    ref = build_model("resnet8", num_classes=10)
    ref.load_state_dict(inputs["ddp"]["state"])
    _ddp_step(ref, inputs["ddp"]["x"], inputs["ddp"]["y"])
    expected = ref.state_dict()
    for res in results:
        assert list(res["ddp"]) == list(expected)
        for k, v in expected.items():
            torch.testing.assert_close(res["ddp"][k], v, **TOL, msg=k)
