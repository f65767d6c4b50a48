import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("kd_benchmark_script", os.path.join(ROOT, "scripts", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cpu_tiny(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "bench" / "table.md"
    argv = ["--model_t", "resnet8", "--model_s", "resnet8", "--methods", "teacher,kd,crd", "--device", "cpu",
            "--warmup", "1", "--steps", "2", "--batch_size", "8", "--synthetic_n", "64", "--nce_k", "16",
            "--num_workers", "0", "--data_root", str(tmp_path / "no_data"), "--out", str(out)]
    result = bench.main(argv)
    json_path = tmp_path / "bench" / "benchmark.json"
    assert out.is_file() and json_path.is_file()
    record = json.loads(json_path.read_text())
    assert record["device"] == "cpu" and record["device_name"]
    import torch
    import torchvision
    assert record["torch"] == torch.__version__ and record["torchvision"] == torchvision.__version__
    assert record["synthetic"] and "synthetic" in record["data"]
    assert "--nce_k 16" in record["command"]
    rows = record["rows"]
    keys = [(r["method"], r["pipeline"]) for r in rows]
    assert sorted(keys) == sorted((m, p) for m in ("teacher", "kd", "crd") for p in ("ours", "dataloader"))
    table = out.read_text()
    for r in rows:
        assert r["ms_per_step"] > 0 and r["images_per_s"] > 0
        expected_h = 240 * math.ceil(50000 / 8) * r["ms_per_step"] / 1000 / 3600
        assert r["projected_hours"] == pytest.approx(expected_h, rel=1e-12)
        assert r["images_per_s"] == pytest.approx(8 * 1000 / r["ms_per_step"], rel=1e-9)
        assert f"| {r['method']} | {r['pipeline']} | {r['ms_per_step']:.2f} |" in table
        if r["pipeline"] == "ours":
            other = next(o for o in rows if o["method"] == r["method"] and o["pipeline"] == "dataloader")
            assert r["speedup"] == pytest.approx(other["ms_per_step"] / r["ms_per_step"])
    assert result["json"] == str(json_path)


def test_benchmark_rejects_bad_counts():
    bench = _load_benchmark()
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])


def test_benchmark_speed_flags_apply_to_our_rows_only(tmp_path):
    bench = _load_benchmark()
    from types import SimpleNamespace
    args = SimpleNamespace(amp=True, channels_last=True, compile=True, compile_mode="auto")
    ours, baseline = SimpleNamespace(), SimpleNamespace()
    bench.apply_speed_options(ours, args, "ours")
    bench.apply_speed_options(baseline, args, "dataloader")
    assert (ours.amp, ours.channels_last, ours.compile) == (True, True, True)
    # the DataLoader row is RepDistiller's configuration whatever the flags
    assert (baseline.amp, baseline.channels_last, baseline.compile) == (False, False, False)
    out = tmp_path / "t.md"
    bench.main(["--model_t", "resnet8", "--model_s", "resnet8", "--methods", "kd", "--device", "cpu", "--warmup", "0",
                "--steps", "1", "--batch_size", "4", "--synthetic_n", "16", "--num_workers", "0", "--pipeline", "ours",
                "--amp", "--channels_last", "--data_root", str(tmp_path / "none"), "--out", str(out)])
    assert "ours: bf16 autocast, channels-last." in out.read_text()


def test_benchmark_trials_row_is_per_student(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "t.md"
    result = bench.main(["--model_t", "resnet8", "--model_s", "resnet8", "--methods", "kd", "--device", "cpu",
                         "--warmup", "0", "--steps", "2", "--batch_size", "4", "--synthetic_n", "16",
                         "--num_workers", "0", "--pipeline", "ours", "--trials", "3",
                         "--data_root", str(tmp_path / "none"), "--out", str(out)])
    rows = {r["pipeline"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "ours, 3 trials"}
    trial = rows["ours, 3 trials"]
    # per-student figures: total seconds of the timed steps of all three students / 3
    assert trial["ms_per_step"] == pytest.approx(trial["seconds"] / 3 * 1000 / 2)
    assert trial["images_per_s"] == pytest.approx(4 * 2 / (trial["seconds"] / 3))
    assert trial["vs_one_student"] == pytest.approx(rows["ours"]["ms_per_step"] / trial["ms_per_step"])
    assert "| kd | ours, 3 trials |" in out.read_text()
