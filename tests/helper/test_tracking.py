"""--wandb: every metrics.jsonl row goes to a W&B run (a stand-in wandb module here: the package is an optional
install), offline by default, resumed runs continue their W&B run, and a missing package is a one-line error."""
import importlib.machinery
import os
import sys
import types
from types import SimpleNamespace

import pytest

import helper.tracking as tracking
from assembly.options import parse_teacher_options
from engine.fit import tracker_of
from helper.logging import RunLogger, read_metrics
from helper.tracking import WANDB_ID_FILE, WandbTracker
from tests.conftest import cpu_args


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.rows = []
        self.finished = False

    def log(self, row):
        self.rows.append(row)

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]
    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_logger_gives_the_tracker_every_row_it_writes(tmp_path):
    run = FakeRun()
    logger = RunLogger(str(tmp_path), tensorboard=False, quiet=True, tracker=WandbTracker(run))
    logger.log({"epoch": 1, "test_acc": 50.0, "train_loss": float("nan")})
    logger.log({"epoch": 2, "test_acc": 60.0, "train_loss": 0.5})
    logger.close()
    assert [r["test_acc"] for r in run.rows] == [50.0, 60.0] and run.finished
    assert [r["epoch"] for r in read_metrics(str(tmp_path))] == [1, 2]


def test_a_failing_tracker_warns_once_and_training_goes_on(tmp_path):
    class Broken(FakeRun):
        def log(self, row):
            raise ConnectionError("no network")
    logger = RunLogger(str(tmp_path), tensorboard=False, quiet=True, tracker=WandbTracker(Broken()))
    with pytest.warns(UserWarning, match="--wandb logging stopped: ConnectionError: no network"):
        logger.log({"epoch": 1, "test_acc": 1.0})
    logger.log({"epoch": 2, "test_acc": 2.0})  # no second warning, and the row is still written
    assert [r["epoch"] for r in read_metrics(str(tmp_path))] == [1, 2]


def test_missing_package_is_a_one_line_error_before_anything_runs(monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as err:
        parse_teacher_options(["--model", "resnet8", "--wandb"])
    assert str(err.value) == ("error: --wandb needs the optional package wandb (pip install wandb); leave out --wandb "
                              "to train without it")


def test_wandb_is_off_by_default_and_offline_when_on(fake_wandb):
    opt = parse_teacher_options(["--model", "resnet8"])
    assert (opt.wandb, opt.wandb_mode, opt.wandb_project, opt.wandb_name) == (False, "offline", "kd-toolkit", None)
    assert tracker_of(SimpleNamespace(opt=opt, run_dir="unused", facts={}), resumed=False, several=False) is None
    assert fake_wandb.runs == []


def test_a_given_name_gets_the_folder_appended_when_a_process_trains_several_runs(fake_wandb, tmp_path):
    opt = parse_teacher_options(["--model", "resnet8", "--wandb", "--wandb_name", "sweep", "--wandb_mode", "online"])
    run = SimpleNamespace(opt=opt, run_dir=str(tmp_path / "S_resnet8_T_resnet32_kd_1"), facts={})
    tracker_of(run, resumed=False, several=True)
    tracker_of(run, resumed=False, several=False)
    assert [r.kwargs["name"] for r in fake_wandb.runs] == ["sweep_S_resnet8_T_resnet32_kd_1", "sweep"]
    assert fake_wandb.runs[0].kwargs["mode"] == "online" and fake_wandb.runs[0].kwargs["config"]["model"] == "resnet8"


@pytest.mark.slow
def test_a_training_run_logs_its_metrics_rows_and_a_resumed_run_continues_its_wandb_run(fake_wandb, tmp_path,
                                                                                          teacher_cifar):
    import train_teacher
    args = cpu_args(teacher_cifar, tmp_path, epochs=1) + ["--model", "resnet8", "--wandb"]
    train_teacher.main(args)
    first = fake_wandb.runs[0]
    run_dir = first.kwargs["dir"]
    assert first.kwargs["mode"] == "offline" and first.kwargs["name"] == os.path.basename(run_dir)
    assert first.kwargs["project"] == "kd-toolkit" and first.finished
    assert first.rows == read_metrics(run_dir)  # the same rows, nan-free here
    kept = open(os.path.join(run_dir, WANDB_ID_FILE)).read().strip()
    assert first.kwargs["id"] == kept and first.kwargs["resume"] == "allow"

    train_teacher.main(cpu_args(teacher_cifar, tmp_path, epochs=2) + ["--model", "resnet8", "--wandb",
                                                                        "--resume", "auto"])
    second = fake_wandb.runs[1]
    assert second.kwargs["id"] == kept
    assert [r["epoch"] for r in second.rows] == [2]
