"""scripts/reproduce_table.py end to end: a tiny table file is run (teacher, students alone, KD), run again (every
cell skipped), and summarised; without a table the tables are listed."""
import csv
import json
import os
import subprocess
import sys

import pytest

from experiments.cli import reproduce_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"title": "Tiny", "source": "a test", "protocol": "last", "dataset": "cifar100", "trials": 1,
        "teachers": "train", "flags": ["--epochs", "1", "--lr_decay_epochs", "1", "--batch_size", "8"],
        "columns": [{"teacher": "resnet8", "student": "resnet8"}],
        "rows": [{"label": "Teacher", "kind": "teacher"}, {"label": "Student", "kind": "vanilla"},
                 {"label": "KD", "distill": "kd", "paper": [50.0]}]}


def test_without_a_table_every_table_is_listed():
    said = []
    assert reproduce_main([], said.append) == 0
    names = [line.split()[0] for line in said[0].splitlines()]
    assert names == ["byot", "checkpointkd", "fashion", "ickd", "kdrefine", "modern", "quickstart", "repdistiller"]


def test_bad_numbers_are_refused_with_the_flag():
    with pytest.raises(ValueError, match="--jobs must be at least 1, got 0"):
        reproduce_main(["quickstart", "--jobs", "0"])
    with pytest.raises(ValueError, match="--device 'gpu0' is not a device"):
        reproduce_main(["quickstart", "--device", "gpu0"])


@pytest.mark.slow
def test_a_table_runs_then_skips_its_finished_cells_and_summarises(tmp_path, teacher_cifar):
    table = tmp_path / "tiny.json"
    table.write_text(json.dumps(TINY))
    save = str(tmp_path / "save")
    command = [sys.executable, "scripts/reproduce_table.py", str(table), "--save_dir", save, "--data_root",
               teacher_cifar, "--device", "cpu", "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0/3 cells done, 0 jobs running, 3 waiting; epochs 0/3" in first.stdout
    assert "3/3 cells done, 0 jobs running, 0 waiting; epochs 3/3" in first.stdout
    rows = list(csv.DictReader(open(os.path.join(save, "tables", "tiny", "summary.csv"))))
    kd = next(r for r in rows if r["row"] == "KD" and r["selection"] == "last")
    assert (kd["trials_finished"], kd["trials_asked"], kd["paper"]) == ("1", "1", "50.0000")
    assert len(os.listdir(os.path.join(save, "tables", "tiny", "logs"))) == 3

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "3 jobs already finished: skipped" in again.stdout and "started" not in again.stdout
    assert "| KD | " in again.stdout


def test_quickstart_prints_mean_and_sd_over_its_seeds_from_the_finished_runs(tmp_path, capsys):
    import importlib.util
    from experiments.cells import Settings, table_cells
    from experiments.table import load_table
    from tests.experiments.fake_runs import write_run
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, "scripts", "quickstart.py"))
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    save = str(tmp_path / "quickstart")
    by = {c.row.label: c for c in table_cells(load_table("quickstart"), Settings(save_dir=save))}
    epochs = by["KD"].epochs
    write_run(by["Teacher"].run_dirs[0], [99.0] * by["Teacher"].epochs)
    for run_dir, last in zip(by["Student from scratch"].run_dirs, (96.0, 97.0, 98.0)):
        write_run(run_dir, [90.0] * (epochs - 1) + [last])
    for run_dir, last in zip(by["KD"].run_dirs, (98.5, 99.0, 99.5)):
        write_run(run_dir, [99.9] + [90.0] * (epochs - 2) + [last])
    quickstart.main(["--save_dir", save])  # every run finished: nothing is trained again
    out = capsys.readouterr().out
    assert "5 jobs already finished: skipped" in out and "started" not in out
    assert f"digits test set, top-1 %: teacher 20 epochs, students {epochs} epochs, mean ± sd over 3 seeds" in out
    assert "| Student from scratch               | resnet8   |   78,042 |  97.00 ± 1.00 |  97.00 ± 1.00 |" in out
    assert "| KD                                 | resnet8   |   78,042 |  99.00 ± 0.50 |  99.90 ± 0.00 |" in out
    assert "KD - from scratch (last epoch): +2.00 points; the larger sd over the seeds: 1.00" in out
