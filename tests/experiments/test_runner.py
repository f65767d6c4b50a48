"""Running a table: finished runs are skipped, unfinished ones start with --resume auto on the next device, students
wait for their teacher (and are not started when it fails), the progress line's time left is the hand-computed one,
and an interrupt stops the running jobs. A stand-in interpreter records the commands instead of training."""
import json
import os
import subprocess
import sys
import time

import pytest

from experiments.cells import Settings, table_cells
from experiments.jobs import table_jobs
from experiments.runner import Progress, RunOptions, Runner
from tests.experiments.fake_runs import small_table, write_run

STUB = """#!{python}
import json, os, sys, time
config = json.load(open({config!r}))
start = time.time()
if "pidfile" in config:
    open(config["pidfile"], "w").write(str(os.getpid()))
argv = sys.argv[1:]
model = argv[argv.index("--model") + 1] if "--model" in argv else argv[argv.index("--model_s") + 1]
time.sleep(config.get("sleep", {{}}).get(model, 0))
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": argv, "start": start, "end": time.time(),
                        "threads": os.environ.get("OMP_NUM_THREADS")}}) + "\\n")
sys.exit(1 if model in config.get("fail", []) else 0)
"""


@pytest.fixture
def recorder(tmp_path):
    """A stand-in python that records its arguments, sleeps or fails as configured; returns (path, config, calls)."""
    log, config = tmp_path / "calls.jsonl", tmp_path / "stub.json"
    config.write_text("{}")
    stub = tmp_path / "python_stub"
    stub.write_text(STUB.format(python=sys.executable, config=str(config), log=str(log)))
    stub.chmod(0o755)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return str(stub), config, calls


def plan(tmp_path):
    table = small_table()
    cells = table_cells(table, Settings(save_dir=str(tmp_path / "save")))
    return cells, table_jobs(cells, "pair"), {c.row.label: c for c in cells}


def options(tmp_path, python, **kw):
    return RunOptions(log_dir=str(tmp_path / "logs"), python=python, poll_s=0.02, progress_every=1000, **kw)


def test_finished_runs_are_skipped_and_unfinished_ones_resume_on_the_next_device(tmp_path, recorder):
    python, _, calls = recorder
    cells, jobs, by = plan(tmp_path)
    write_run(by["Teacher"].run_dirs[0], [50.0, 60.0])  # finished
    write_run(by["Student"].run_dirs[0], [50.0, 60.0])  # trial 1 finished
    write_run(by["Student"].run_dirs[1], [50.0])  # trial 2 interrupted after epoch 1
    lines = []
    failed = Runner(jobs, cells, options(tmp_path, python, jobs=2, devices=("cuda:0", "cuda:1"), threads=3),
                    lines.append).run()
    assert failed == 0
    assert {c["threads"] for c in calls()} == {"3"}
    ran = [c["argv"] for c in calls()]
    trials = sorted(a[a.index("--trial") + 1] for a in ran if a[0] == "train_teacher.py")
    assert trials == ["2", "3"]  # the teacher and the finished trial 1 are not run again
    assert [a[0] for a in ran].count("train_student.py") == 1
    assert all(a[a.index("--resume") + 1] == "auto" for a in ran)
    assert {a[a.index("--device") + 1] for a in ran[:2]} == {"cuda:0", "cuda:1"}
    assert lines[0] == "2 jobs already finished: skipped"
    logs = os.listdir(tmp_path / "logs")
    assert len(logs) == 3 and all(name.endswith(".log") for name in logs)


def test_students_start_after_their_teacher_and_not_at_all_when_it_fails(tmp_path, recorder):
    python, config, calls = recorder
    cells, jobs, _ = plan(tmp_path)
    config.write_text(json.dumps({"sleep": {"resnet14": 0.5}}))
    assert Runner(jobs, cells, options(tmp_path, python, jobs=5), lambda s: None).run() == 0
    done = {c["argv"][c["argv"].index("--model") + 1] if "--model" in c["argv"] else "student": c for c in calls()}
    assert done["student"]["start"] >= done["resnet14"]["end"]

    os.remove(tmp_path / "calls.jsonl")
    config.write_text(json.dumps({"fail": ["resnet14"]}))
    lines = []
    cells, jobs, _ = plan(tmp_path / "again")
    assert Runner(jobs, cells, options(tmp_path / "again", python, jobs=1), lines.append).run() == 2
    assert [c["argv"][0] for c in calls()] == ["train_teacher.py"] * 4  # the teacher and three students alone
    assert any(line.startswith("failed (exit status 1): teacher resnet14") for line in lines)
    assert any(line.startswith("not started, a teacher it needs failed: KD | resnet14 -> resnet8") for line in lines)


def test_progress_line_counts_cells_and_epochs_and_extrapolates_the_time_left(tmp_path):
    cells, jobs, by = plan(tmp_path)
    write_run(by["Teacher"].run_dirs[0], [50.0, 60.0])
    now = [1000.0]
    progress = Progress(cells, jobs, clock=lambda: now[0])
    # 2 teacher + 3 x 2 student-alone + 3 x 2 KD epochs = 14, of which the teacher's 2 were done at the start
    assert progress.line(0, 5) == ("1/3 cells done, 0 jobs running, 5 waiting; epochs 2/14; 0 s elapsed, "
                                   "time left known once an epoch finishes")
    write_run(by["Student"].run_dirs[0], [50.0, 60.0])
    write_run(by["KD"].run_dirs[0], [50.0])
    now[0] += 30.0
    # 3 epochs in 30 s, 9 left: 90 s
    assert progress.line(2, 1, failed=1) == ("1/3 cells done, 2 jobs running, 1 waiting, 1 failed; epochs 5/14; "
                                             "30 s elapsed, about 1 min 30 s left")


def test_an_interrupt_stops_the_running_jobs_and_propagates(tmp_path, recorder, monkeypatch):
    python, config, _ = recorder
    cells, jobs, _ = plan(tmp_path)
    config.write_text(json.dumps({"sleep": {"resnet14": 60}}))
    runner = Runner(jobs[:1], cells, options(tmp_path, python, jobs=1), lambda s: None)
    started = []
    real_start = runner.start

    def start(job, slot):
        real_start(job, slot)
        started.append(runner.running[slot][1])
    monkeypatch.setattr(runner, "start", start)

    def interrupt():  # Ctrl-C while the runner waits for its jobs
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "wait", interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    (proc,) = started
    assert proc.returncode is not None and proc.returncode != 0  # stopped, not left running for a minute


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_runner_takes_its_jobs_with_it(tmp_path, recorder):
    # a job outliving a SIGKILLed runner would write into the run folder the next runner's job resumes
    python, config, _ = recorder
    pidfile = tmp_path / "job.pid"
    config.write_text(json.dumps({"sleep": {"resnet14": 120}, "pidfile": str(pidfile)}))
    script = tmp_path / "runner.py"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script.write_text(f"""import sys
sys.path.insert(0, {root!r})
from experiments.cells import Settings, table_cells
from experiments.jobs import table_jobs
from experiments.runner import RunOptions, Runner
from tests.experiments.fake_runs import small_table
cells = table_cells(small_table(), Settings(save_dir={str(tmp_path / "save")!r}))
Runner(table_jobs(cells, "pair")[:1], cells, RunOptions(log_dir={str(tmp_path / "logs")!r}, python={python!r}),
       lambda s: None).run()
""")
    runner = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 120
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    job = int(pidfile.read_text())
    assert alive(job)
    runner.kill()
    runner.wait()
    while alive(job) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(job)


def test_jobs_sharing_the_cpu_divide_its_cores(monkeypatch):
    from experiments.runner import cpu_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cpu_threads(2, (), cuda_available=False) == 4
    assert cpu_threads(3, ("cpu",), cuda_available=True) == 2
    assert cpu_threads(16, ("cpu",), cuda_available=False) == 1
    assert cpu_threads(1, ("cpu",), cuda_available=False) is None  # one job: the environment's threads
    assert cpu_threads(2, ("cuda:0", "cuda:1"), cuda_available=True) is None
    assert cpu_threads(2, (), cuda_available=True) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(2, (), cuda_available=False) is None  # the user's setting wins
