"""The entry scripts under torchrun (2 gloo processes on CPU) against single-process runs.

K processes with batch B each see the global batch K*B that one process with batch K*B sees (same shuffle,
same crops, CRD negatives drawn for the global batch, BatchNorm statistics over it with --sync_bn), so after a
few steps their weights agree up to float summation order. Differences grow chaotically with the number of
steps (~3e-3 relative after 10), hence tiny runs: 43 training images, global batch 32, 2-4 steps.
"""
import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_student
import train_teacher
from assembly.options import parse_configurations
from assembly.student import build_student_runs
from dataset.cifar import write_cifar_format
from engine.fit import fit_runs
from helper import distributed as D
from tests.spawn import free_port, spawn_and_wait
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORLD = 2
# 43 = 32 + 11: the second global batch splits 6/5, so uneven shards (the loss re-weighting, BatchNorm and
# CRD row gathers over unequal parts) are part of every run; 41 test images split 21/20 in validation.
N_TRAIN, N_TEST = 43, 41
# A rank stuck in a collective would otherwise hold the suite for gloo's 30-minute timeout.
RUN_TIMEOUT_S = 240
TEACHER_RUN = "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")

PARAM_TOL = dict(atol=2e-4, rtol=1e-3)
# running_var is a variance of activations: its size, and with it the absolute effect of a different
# summation order, grows with the square of the activations, so it gets a relative tolerance of its own.
BUFFER_TOL = dict(atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    rng = np.random.default_rng(1)
    # a class-dependent colour, so that the few steps move the weights by more than noise
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    ty = np.arange(N_TRAIN) % 100
    vy = np.arange(N_TEST) % 100
    tx = (base[ty][:, :, None, None] + rng.integers(0, 56, (N_TRAIN, 3, 32, 32))).astype(np.uint8)
    vx = (base[vy][:, :, None, None] + rng.integers(0, 56, (N_TEST, 3, 32, 32))).astype(np.uint8)
    write_cifar_format(str(root), "cifar100", tx, ty, vx, vy)
    return str(root)


def _common(data_root, save_dir, epochs=1, batch_size=32):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs", str(epochs),
            "--batch_size", str(batch_size), "--device", "cpu", "--save_freq", "1"]


@pytest.fixture(scope="module")
def teacher(data_root, tmp_path_factory):
    """One process x 32 for one epoch: the students' teacher, and the reference of the teacher test."""
    save = tmp_path_factory.mktemp("dist_teacher")
    train_teacher.main(_common(data_root, save) + ["--model", "resnet8"])
    run_dir = os.path.join(str(save), "models", TEACHER_RUN)
    return run_dir, os.path.join(run_dir, "ckpt_epoch_1.pth")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd, env):
    """Run ``cmd`` in the project root; its own session, so a hang can be ended with all its workers."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... did not finish within {RUN_TIMEOUT_S}s:\n{out[-4000:]}")
    return proc.returncode, out


def _torchrun(script, args, nproc=WORLD):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", script] + list(args)
    rc, out = _run(cmd, _clean_env())
    assert rc == 0, f"torchrun {script} failed (rc {rc}):\n{out[-4000:]}"
    return out


def _only_run_dir(save_dir):
    dirs = glob.glob(os.path.join(str(save_dir), "student_model", "*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _assert_states_close(got, ref, what):
    assert list(got) == list(ref), what
    for k, v in ref.items():
        g = got[k]
        if k.endswith("num_batches_tracked"):
            # one increment per optimisation step, whatever the number of processes
            assert torch.equal(g, v), f"{what}: {k} {g} vs {v}"
        elif ".running_" in k:
            torch.testing.assert_close(g, v, **BUFFER_TOL, msg=lambda m: f"{what}: {k}: {m}")
        else:
            torch.testing.assert_close(g, v, **PARAM_TOL, msg=lambda m: f"{what}: {k}: {m}")


def _assert_moved(after, before, what):
    # Guards a closeness check against passing trivially, e.g. with a learning rate of zero.
    moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(after[k], v)]
    assert moved, f"{what}: no tensor changed"


# ------------------------------------------------------------------------------------------- torchrun CLI

@pytest.mark.slow
def test_torchrun_crd_student_matches_one_process_with_the_global_batch(data_root, teacher, tmp_path):
    _, path_t = teacher
    method = ["--path_t", path_t, "--distill", "crd", "--nce_k", "20", "--model_s", "resnet8", "--sync_bn"]
    out = _torchrun("train_student.py", _common(data_root, tmp_path / "ddp", batch_size=16) + method
                    + ["--learning_rate", "0.025", "--lr_scale", "linear"])
    train_student.main(_common(data_root, tmp_path / "one", batch_size=32) + method + ["--learning_rate", "0.05"])

    ddp_dir, one_dir = _only_run_dir(tmp_path / "ddp"), _only_run_dir(tmp_path / "one")
    assert os.path.basename(ddp_dir) == os.path.basename(one_dir)
    got = load_checkpoint(os.path.join(ddp_dir, "resnet8_last.pth"))
    ref = load_checkpoint(os.path.join(one_dir, "resnet8_last.pth"))
    _assert_states_close(got["model"], ref["model"], "student")
    assert got["optimizer"]["state"], "no optimisation step was taken, so the comparison proves nothing"
    for k in ("criterion.contrast.memory_v1", "criterion.contrast.memory_v2"):
        torch.testing.assert_close(got["distiller"][k], ref["distiller"][k], **PARAM_TOL, msg=lambda m: f"{k}: {m}")
    # Z is fixed from the first global batch: a mean over one process's half would differ
    torch.testing.assert_close(got["distiller"]["criterion.contrast.params"],
                               ref["distiller"]["criterion.contrast.params"], **PARAM_TOL,
                               msg=lambda m: f"criterion.contrast.params (K, T, Z_v1, Z_v2, momentum): {m}")

    # --lr_scale linear: 0.025 per process x 2 processes
    assert got["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05)
    assert got["opt"]["world_size"] == WORLD
    rows = read_metrics(ddp_dir)
    assert [r["epoch"] for r in rows] == [1], "metrics.jsonl must be written by process 0 only"
    assert rows[0]["lr"] == pytest.approx(0.05)
    # the epoch's training loss is summed over both processes' samples, so it is the global batch's
    assert rows[0]["train_loss"] == pytest.approx(read_metrics(one_dir)[0]["train_loss"], rel=1e-4)
    assert out.count("x 2 processes") == 1, out


@pytest.mark.slow
def test_torchrun_with_trials_matches_one_process_trials(data_root, teacher, tmp_path):
    # both features together: every process steps both trials, each in its own RNG stream, on its shard
    _, path_t = teacher
    method = ["--path_t", path_t, "--distill", "crd", "--nce_k", "20", "--model_s", "resnet8", "--trials", "2"]
    out = _torchrun("train_student.py", _common(data_root, tmp_path / "ddp", batch_size=16) + method
                    + ["--sync_bn", "--lr_scale", "none"])
    train_student.main(_common(data_root, tmp_path / "one", batch_size=32) + method)
    names = sorted(os.listdir(tmp_path / "ddp" / "student_model"))
    assert names == sorted(os.listdir(tmp_path / "one" / "student_model")) and len(names) == 2
    states = []
    for name in names:
        got = load_checkpoint(str(tmp_path / "ddp" / "student_model" / name / "resnet8_last.pth"))
        ref = load_checkpoint(str(tmp_path / "one" / "student_model" / name / "resnet8_last.pth"))
        _assert_states_close(got["model"], ref["model"], f"student {name}")
        torch.testing.assert_close(got["distiller"]["criterion.contrast.memory_v1"],
                                   ref["distiller"]["criterion.contrast.memory_v1"], **PARAM_TOL)
        states.append(got["model"]["conv1.weight"])
    assert not torch.equal(states[0], states[1]), "the two trials must be different students"
    assert out.count("2 trials: best acc") == 1, out


@pytest.mark.slow
def test_torchrun_teacher_matches_one_process_with_the_global_batch(data_root, teacher, tmp_path):
    ref_dir, _ = teacher
    _torchrun("train_teacher.py", _common(data_root, tmp_path, batch_size=16)
              + ["--model", "resnet8", "--sync_bn", "--lr_scale", "none"])
    run_dir = os.path.join(str(tmp_path), "models", TEACHER_RUN)
    got = load_checkpoint(os.path.join(run_dir, "resnet8_last.pth"))
    ref = load_checkpoint(os.path.join(ref_dir, "resnet8_last.pth"))
    _assert_states_close(got["model"], ref["model"], "teacher")
    assert got["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05)
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]


@pytest.mark.slow
def test_resume_with_a_different_number_of_processes(data_root, teacher, tmp_path):
    _, path_t = teacher
    method = ["--path_t", path_t, "--distill", "kd", "--model_s", "resnet8", "--sync_bn", "--lr_scale", "none"]
    _torchrun("train_student.py", _common(data_root, tmp_path / "resumed", epochs=1, batch_size=16) + method)
    resumed_dir = _only_run_dir(tmp_path / "resumed")
    after_one = load_checkpoint(os.path.join(resumed_dir, "ckpt_epoch_1.pth"))
    assert after_one["epoch"] == 1

    train_student.main(_common(data_root, tmp_path / "resumed", epochs=2, batch_size=32) + method
                       + ["--resume", "auto"])
    train_student.main(_common(data_root, tmp_path / "straight", epochs=2, batch_size=32) + method)

    got = load_checkpoint(os.path.join(resumed_dir, "resnet8_last.pth"))
    ref = load_checkpoint(os.path.join(_only_run_dir(tmp_path / "straight"), "resnet8_last.pth"))
    assert got["epoch"] == ref["epoch"] == 2
    _assert_states_close(got["model"], ref["model"], "resumed student")
    # without this, a resume that silently restarted from scratch would still compare with its own epoch 1
    _assert_moved(got["model"], after_one["model"], "epoch 2 of the resumed run")
    rows = read_metrics(resumed_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05])


# ----------------------------------------------------------------------------------- in-process spawn

def _fit_worker(rank, port, argv, out_dir):
    torch.set_num_threads(1)
    # What torchrun would export, so that setup_run takes its real path.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    try:
        # process group, seeds, data, normalisation, teacher and runs, as train_student.py builds them
        plan = build_student_runs(parse_configurations(argv))
        opt, data, device, teacher, runs = plan.options, plan.data, plan.device, plan.teacher, plan.runs
        distiller = runs[0].distiller
        initial = {k: v.clone() for k, v in distiller.state_dict().items()}
        # The end of every epoch broadcasts rank 0's buffers, memory banks included, which would hide banks
        # that drifted apart during the epoch; epoch_metrics runs after the epoch's last step and before that.
        trained = []
        own_metrics = distiller.epoch_metrics

        def metrics_after_snapshot():
            trained.append({k: v.clone() for k, v in distiller.state_dict().items()})
            return own_metrics()

        distiller.epoch_metrics = metrics_after_snapshot
        fit_runs(runs, opt, data, device, teacher)
        # prepare_run may swap the student's BatchNorm modules, so read the networks back from the run
        torch.save({"world_size": runs[0].facts["world_size"], "initial": initial, "trained": trained,
                    "distiller": distiller.state_dict(), "student": runs[0].student.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        D.destroy()


@pytest.mark.slow
def test_spawned_ranks_keep_identical_crd_memory_and_students(data_root, teacher, tmp_path):
    _, path_t = teacher
    # Two epochs: the second runs with the Z fixed in the first and after the end-of-epoch buffer broadcast.
    # Without --sync_bn each rank's features come from BatchNorm over its own half; the banks must agree anyway,
    # because every rank writes the rows gathered from both.
    argv = _common(data_root, tmp_path / "save", epochs=2, batch_size=16) + [
        "--path_t", path_t, "--distill", "crd", "--nce_k", "20", "--model_s", "resnet8"]
    spawn_and_wait(_fit_worker, (free_port(), argv, str(tmp_path)), WORLD, RUN_TIMEOUT_S)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))

    assert r0["world_size"] == r1["world_size"] == WORLD
    assert len(r0["trained"]) == len(r1["trained"]) == 2, "one snapshot per epoch"
    banks = ("criterion.contrast.memory_v1", "criterion.contrast.memory_v2", "criterion.contrast.params")
    for epoch, (s0, s1) in enumerate(zip(r0["trained"], r1["trained"]), start=1):
        for k in banks:
            assert torch.equal(s0[k], s1[k]), f"{k} differs between ranks after the steps of epoch {epoch}"
    z = r0["distiller"]["criterion.contrast.params"][2:4]
    assert (z > 0).all(), f"Z was never set: {z}"
    for r, res in enumerate((r0, r1)):
        for k in banks[:2]:
            # Every sample was in some global batch of epoch 1, so every rank must have written all rows,
            # the other rank's half of each batch included.
            unchanged = (res["trained"][0][k] == res["initial"][k]).all(dim=1).nonzero().flatten().tolist()
            assert unchanged == [], f"rank {r}: rows {unchanged} of {k} were not updated in epoch 1"
    assert list(r0["student"]) == list(r1["student"])
    for k, v in r0["student"].items():
        # parameters through DDP's averaged gradients, buffers through the end-of-epoch broadcast
        assert torch.equal(v, r1["student"][k]), f"student {k} differs between ranks"
    for k, v in r0["distiller"].items():
        assert torch.equal(v, r1["distiller"][k]), f"distiller {k} differs between ranks"


# -------------------------------------------------------------------------------------------- bad launches

def _student_argv(tmp_path):
    # The launch is checked before the data or the teacher are read, so neither needs to exist.
    return _common(str(tmp_path / "no_data"), tmp_path / "save") + [
        "--path_t", str(tmp_path / "no_teacher.pth"), "--distill", "kd"]


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, r"RANK=2 is outside \[0, WORLD_SIZE=2\)"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"}, "MASTER_ADDR, MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set"),
])
def test_inconsistent_launch_environment_is_refused(monkeypatch, tmp_path, env, match):
    for k in TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        train_student.main(_student_argv(tmp_path))
    assert not torch.distributed.is_initialized()
    assert not os.path.exists(tmp_path / "save"), "nothing may be written before the launch is checked"


@pytest.mark.slow
def test_cli_reports_a_bad_rank_without_a_traceback(tmp_path):
    env = _clean_env()
    env.update(WORLD_SIZE="2", RANK="2", LOCAL_RANK="0")
    rc, out = _run([sys.executable, "train_student.py"] + _student_argv(tmp_path), env)
    assert rc != 0
    assert "error: RANK=2 is outside [0, WORLD_SIZE=2)" in out, out
    assert "Traceback" not in out, out
