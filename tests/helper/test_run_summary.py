"""summary.json is strict JSON like metrics.jsonl."""
import json
import math
from types import SimpleNamespace

import pytest

from helper.run import write_summary


def refuse_constant(name):
    raise ValueError(f"bare {name} in strict JSON")


def test_summary_writes_nan_as_null(tmp_path):
    opt = SimpleNamespace(model="resnet8", learning_rate=float("nan"))
    path = write_summary(str(tmp_path), opt, best_acc=12.5, last_acc=float("nan"), per_exit=[1.0, math.inf])
    summary = json.loads(open(path).read(), parse_constant=refuse_constant)
    assert summary["last_acc"] is None and summary["per_exit"] == [1.0, None]
    assert summary["best_acc"] == pytest.approx(12.5)
    assert summary["options"] == {"model": "resnet8", "learning_rate": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary left
