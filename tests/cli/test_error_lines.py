"""The entry scripts' error wrapper: one ``error:`` line (a traceback with --debug), and interrupts that say
where to continue."""
import errno
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch

import convert
import train_teacher
from helper.checkpoint import load_checkpoint, save_checkpoint
from helper.run import EXIT_SIGINT, EXIT_SIGTERM, run_cli
from models import build_model

from tests.conftest import common_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_FOLDER = "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"


def exit_message(main, argv=()):
    """What ``run_cli`` ends the process with (SystemExit's code: the message, or the exit status), with
    ``argv`` as the command line it sees."""
    with mock.patch.object(sys, "argv", ["script.py", *argv]), pytest.raises(SystemExit) as e:
        run_cli(main)
    return e.value.code


def raising(exc):
    def main():
        raise exc
    return main


@pytest.mark.parametrize("exc,line", [
    (PermissionError(errno.EACCES, "Permission denied", "save/x.pth"), "error: 'save/x.pth': permission denied"),
    (FileNotFoundError("checkpoint 'x.pth' does not exist"), "error: checkpoint 'x.pth' does not exist"),
    (OSError(errno.ENOSPC, "No space left on device", "save/x.pth"), "error: 'save/x.pth': no space left on device"),
    (pickle.UnpicklingError("invalid load key, '<'."), "error: invalid load key, '<'."),
    (ValueError("first line\nsecond line"), "error: first line (--debug shows the full message)"),
])
def test_errors_end_with_one_line(exc, line, monkeypatch):
    monkeypatch.delenv("KD_DEBUG", raising=False)
    assert exit_message(raising(exc)) == line


def test_debug_flag_and_environment_show_the_traceback(monkeypatch):
    monkeypatch.delenv("KD_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["script.py", "--model", "x", "--debug"])
    with pytest.raises(ValueError, match="bad input"):
        run_cli(raising(ValueError("bad input")))
    monkeypatch.setattr(sys, "argv", ["script.py"])
    monkeypatch.setenv("KD_DEBUG", "1")
    with pytest.raises(PermissionError):
        run_cli(raising(PermissionError(errno.EACCES, "Permission denied", "x")))


def test_interrupt_outside_training_is_one_line(capsys):
    assert exit_message(raising(KeyboardInterrupt())) == EXIT_SIGINT
    assert capsys.readouterr().err == "interrupted\n"


def test_debug_is_an_option_of_every_entry_script():
    from assembly.evaluate import parser as validation_parser
    from assembly.options import student_parser, teacher_parser
    from assembly.search import search_parser
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import select_teacher
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    for parser in (teacher_parser(), student_parser(), search_parser(), validation_parser(),
                   convert.parser(), select_teacher.parser()):
        assert any("--debug" in a.option_strings for a in parser._actions), parser.prog


def test_convert_refuses_a_model_without_rep_blocks(tmp_path):
    load, save = str(tmp_path / "resnet8.pth"), str(tmp_path / "resnet8_deploy.pth")
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, load)
    line = exit_message(lambda: convert.main(["--arch", "resnet8", "--load", load, "--save", save]))
    assert line == (f"error: --arch resnet8 has no re-parameterisable blocks, so there is nothing to fuse and no "
                    f"file was written; '{load}' is already its deploy form (convert.py fuses: repmobilenetv2, "
                    f"represnet20, represnet32, represnet8x4, repvgg8)")
    assert not os.path.exists(save)


def test_save_dir_that_is_a_file(tmp_path, tiny_cifar):
    blocker = tmp_path / "save"
    blocker.write_text("not a folder")
    argv = common_args(tiny_cifar, blocker) + ["--model", "resnet8"]
    assert exit_message(lambda: train_teacher.main(argv)) == (
        f"error: --save_dir '{blocker}' is a file, not a folder; give a folder (it is created if missing) or move "
        "the file")
    argv = common_args(tiny_cifar, blocker / "runs") + ["--model", "resnet8"]
    assert exit_message(lambda: train_teacher.main(argv)) == (
        f"error: --save_dir '{blocker / 'runs'}' lies inside '{blocker}', which is a file, not a folder; give "
        "another --save_dir")
    assert sorted(os.listdir(tmp_path)) == ["save"]


@pytest.mark.slow
def test_run_start_clears_stale_temporaries_and_resume_checks_architecture(tmp_path, tiny_cifar):
    run = tmp_path / "models" / RUN_FOLDER
    run.mkdir(parents=True)
    (run / ".tmp_killed.pth").write_bytes(b"PK\x03\x04half a checkpoint")
    train_teacher.main(common_args(tiny_cifar, tmp_path) + ["--model", "resnet8"])
    assert not (run / ".tmp_killed.pth").exists()
    last = str(run / "resnet8_last.pth")
    argv = common_args(tiny_cifar, tmp_path / "other", epochs=2) + ["--model", "resnet14", "--resume", last]
    line = exit_message(lambda: train_teacher.main(argv))
    own = build_model("resnet14", num_classes=100).state_dict()
    have = load_checkpoint(last)["model"]
    first = next(k for k in own if k not in have)
    assert line == (f"error: --resume checkpoint '{last}' does not fit architecture 'resnet14' "
                    f"({len(set(own) - set(have))} missing keys, first {first}); resume a checkpoint of this run's "
                    "own folder (--resume auto) or match its --model_s/--model")
    # a checkpoint that already reached --epochs is no finished run of another architecture either
    argv = common_args(tiny_cifar, tmp_path / "other", epochs=1) + ["--model", "resnet14", "--resume", last]
    assert exit_message(lambda: train_teacher.main(argv)) == line
    assert not (tmp_path / "other").exists()  # the refused runs left no folder behind


def interrupt_mid_run(tmp_path, tiny_cifar, signum):
    """Start a long teacher run, signal it once its first checkpoint exists; (exit status, stderr, run folder)."""
    argv = common_args(tiny_cifar, tmp_path, epochs=200) + ["--model", "resnet8"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("KD_DEBUG", None)
    # SIGINT as a terminal would deliver it: a suite started in the background (`nohup ... &`) ignores SIGINT, and
    # children inherit that, so the run would rightly go on (a shell's background jobs are meant to survive Ctrl-C)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_teacher.py")] + argv, cwd=str(tmp_path),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / "models" / RUN_FOLDER / "resnet8_last.pth"
    deadline = time.monotonic() + 240  # a bound against a hang, not a timing assertion
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be interrupted (status {proc.returncode}): "
                    f"{proc.stderr.read()[-2000:]}")
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # the run went on: say how the child treated the signal (blocked, ignored, caught) and where it was
        status = open(f"/proc/{proc.pid}/status").read()
        masks = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        dump = subprocess.run([os.path.join(os.path.dirname(sys.executable), "py-spy"), "dump", "--pid",
                               str(proc.pid)], capture_output=True, text=True).stdout if os.path.exists(
            os.path.join(os.path.dirname(sys.executable), "py-spy")) else ""
        proc.kill()
        pytest.fail(f"the run did not stop within 120 s of signal {signum}: {masks}\n{dump}")
    return proc.returncode, err, last


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)])
def test_interrupted_run_says_where_to_continue(tmp_path, tiny_cifar, signum, status):
    code, err, last = interrupt_mid_run(tmp_path, tiny_cifar, signum)
    assert code == status, err
    assert "Traceback" not in err
    m = re.fullmatch(r"interrupted in epoch (\d+); continue with --resume auto", err.strip().splitlines()[-1])
    assert m, err
    saved = torch.load(str(last), weights_only=True)["epoch"]
    # the signal lands while epoch e trains (epoch e-1 saved) or while e's own checkpoints are written
    assert saved in (int(m.group(1)) - 1, int(m.group(1)))
    assert not [n for n in os.listdir(last.parent) if n.startswith(".tmp_")]


@pytest.mark.parametrize("model_t", [None, "resnet8"])
def test_a_broken_teacher_file_is_reported_before_its_folder_name(tmp_path, model_t):
    """An empty download in a folder whose name says no architecture: the file is the problem to name."""
    import train_student
    empty = tmp_path / "downloads" / "teacher.pth"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    argv = ["--path_t", str(empty), "--dataset", "digits", "--device", "cpu", "--save_dir", str(tmp_path / "save")]
    argv += ["--model_t", model_t] if model_t else []
    with pytest.raises(ValueError, match=r"^'.*teacher\.pth' is empty \(0 bytes; an interrupted copy"):
        train_student.main(argv)
    assert not (tmp_path / "save").exists()
