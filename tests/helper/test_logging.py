"""helper/logging.py: the metrics file is strict JSON (issue #10, bad options)."""
import json
import math
import os

from helper.logging import RunLogger, read_metrics


def _refuse(text):
    raise ValueError(f"bare {text} in metrics.jsonl")


def test_metrics_file_is_strict_json_and_reads_back_nan(tmp_path):
    logger = RunLogger(str(tmp_path), tensorboard=False, quiet=True)
    logger.log({"epoch": 1, "train_loss": math.nan, "test_loss": math.inf, "loss_kd": -math.inf, "test_acc": 1.5})
    logger.close()
    lines = open(os.path.join(tmp_path, "metrics.jsonl")).read().splitlines()
    row = json.loads(lines[0], parse_constant=_refuse)
    assert row == {"epoch": 1, "train_loss": None, "test_loss": None, "loss_kd": None, "test_acc": 1.5}
    [back] = read_metrics(str(tmp_path))
    assert math.isnan(back["train_loss"]) and math.isnan(back["test_loss"]) and math.isnan(back["loss_kd"])
    assert back["test_acc"] == 1.5 and back["epoch"] == 1
    # the rewrite on resume keeps the file strict as well
    RunLogger(str(tmp_path), resume_epoch=1, tensorboard=False, quiet=True).close()
    json.loads(open(os.path.join(tmp_path, "metrics.jsonl")).read(), parse_constant=_refuse)
