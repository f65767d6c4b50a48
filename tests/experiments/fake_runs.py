"""Run folders as the entry scripts leave them (metrics.jsonl rows, summary.json), written by hand for the tests."""
import json
import os

from experiments.table import parse_table
from helper.logging import metrics_line


def write_run(run_dir, accuracies, **extra_columns):
    """metrics.jsonl with one row per epoch (1, 2, ...): ``test_acc`` from ``accuracies``, a training loss, and any
    other column given as a list of per-epoch values."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for i, acc in enumerate(accuracies):
            row = {"epoch": i + 1, "lr": 0.05, "train_loss": 2.0 / (i + 1), "test_acc": acc}
            row.update({k: v[i] for k, v in extra_columns.items()})
            f.write(metrics_line(row))


def write_summary(run_dir, **values):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(values, f)


def small_table(**overrides):
    """One column resnet14 -> resnet8 on digits, 2 epochs, 3 trials: teacher, student alone and KD, with paper
    numbers."""
    data = {"title": "Small", "source": "a hand-made table", "protocol": "last", "dataset": "digits", "trials": 3,
            "teachers": "train", "flags": ["--epochs", "2", "--lr_decay_epochs", "1"],
            "columns": [{"teacher": "resnet14", "student": "resnet8"}],
            "rows": [{"label": "Teacher", "kind": "teacher", "paper": [80.0]},
                     {"label": "Student", "kind": "vanilla", "paper": [70.0]},
                     {"label": "KD", "distill": "kd", "paper": [70.66]}]}
    data.update(overrides)
    return parse_table(data, "small")
