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
    from assembly.options import parse_teacher_options
    # the speed options reach the frozen options as flags of the row's parser
    ours = parse_teacher_options(["--model", "resnet8"] + bench.speed_flags(args, "ours"))
    baseline = parse_teacher_options(["--model", "resnet8"] + bench.speed_flags(args, "dataloader"))
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


def test_eager_op_counts_skip_compiled_regions_and_split_the_phases():
    import torch
    bench = _load_benchmark()
    # ones, add, sum: three ops (ones' own empty + fill_ are counted as ones)
    assert bench.eager_op_counts(lambda: (torch.ones(3) + 1).sum()) == \
        {"step": 3, "backward": 0, "optimizer": 0, "total": 3}
    compiled = torch.compile(lambda x: (x * 2 + 1).sin().sum(), backend="aot_eager")
    x = torch.randn(4)
    compiled(x)  # compiles; later calls run the graph
    assert bench.eager_op_counts(lambda: compiled(x))["total"] == 0
    p = torch.nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([p], lr=0.1)

    def step():
        (p * 2).sum().backward()
        sgd.step()
    counts = bench.eager_op_counts(step)
    assert counts["step"] >= 2 and counts["backward"] >= 1 and counts["optimizer"] >= 1
    assert counts["total"] == counts["step"] + counts["backward"] + counts["optimizer"]


def test_dataloader_row_builds_nchw_networks_where_the_default_is_channels_last(tmp_path, monkeypatch):
    """On CUDA the networks are built channels-last by default; RepDistiller's row must still run NCHW."""
    import torch
    import assembly.student
    from helper import run as helper_run
    bench = _load_benchmark()

    def cuda_like_place_model(model, device, opt=None):  # helper.run.place_model with the CUDA default
        flag = None if opt is None else opt.channels_last
        model = model.to(device)
        return model.to(memory_format=torch.channels_last) if flag is None or flag else model

    monkeypatch.setattr(assembly.student, "place_model", cuda_like_place_model)
    monkeypatch.setattr(bench, "place_model", cuda_like_place_model)
    monkeypatch.setattr(helper_run, "place_model", cuda_like_place_model)
    seen = []
    original = bench.time_steps

    def spy(batches, opt, runs, teacher, *args, **kw):
        result = original(batches, opt, runs, teacher, *args, **kw)
        # the teacher is a Teacher wrapping its network now: look at that network's layers
        nets = [r.student for r in runs] + ([teacher.feature_model] if teacher is not None else [])
        seen.append(["cl" if n.conv1.weight.is_contiguous(memory_format=torch.channels_last) else "nchw"
                     for n in nets])
        return result

    monkeypatch.setattr(bench, "time_steps", spy)
    result = bench.main(["--model_t", "resnet8", "--model_s", "resnet8", "--methods", "teacher,kd", "--device", "cpu",
                         "--warmup", "0", "--steps", "1", "--batch_size", "4", "--synthetic_n", "16",
                         "--num_workers", "0", "--channels_last", "--data_root", str(tmp_path / "none"),
                         "--out", str(tmp_path / "t.md")])
    pipelines = [(r["method"], r["pipeline"]) for r in result["rows"]]
    assert pipelines == [("teacher", "ours"), ("teacher", "dataloader"), ("kd", "ours"), ("kd", "dataloader")]
    # teacher training: one network; kd: student and teacher
    assert seen == [["cl"], ["nchw"], ["cl", "cl"], ["nchw", "nchw"]]
    for r in result["rows"]:
        ops = r["eager_ops"]
        assert ops["total"] == ops["step"] + ops["backward"] + ops["optimizer"] > 0
    assert "| eager ops/step (step + backward + optimizer) |" in (tmp_path / "t.md").read_text()


def test_benchmark_imagenet_reports_both_pipelines_and_the_step_alone(tmp_path):
    bench = _load_benchmark()
    argv = ["--dataset", "imagenet", "--model_t", "ResNet18", "--model_s", "MobileNetV1", "--device", "cpu",
            "--warmup", "0", "--steps", "1", "--batch_size", "4",
            "--crop_size", "32", "--synthetic_n", "8", "--synthetic_size", "40x30", "--num_workers", "0",
            "--data_root", str(tmp_path / "no_data"), "--out", str(tmp_path / "bench")]
    result = bench.main(argv)
    record = json.loads((tmp_path / "bench" / "benchmark_imagenet.json").read_text())
    assert result["json"] == str(tmp_path / "bench" / "benchmark_imagenet.json")
    assert (record["model_t"], record["model_s"]) == ("ResNet18", "MobileNetV1")
    assert record["data"].startswith("synthetic ImageFolder of 8 random-pixel 40x30 JPEG files")
    rows = [(r["row"], r["method"], r["pipeline"]) for r in record["rows"]]
    # no GPU: the DALI rows are left out
    assert rows == [("data pipeline alone", "", "dataloader"), ("training step alone", "kd", "device tensors"),
                    ("training step with data", "kd", "dataloader")]
    table = (tmp_path / "bench" / "benchmark_imagenet.md").read_text()
    for r in record["rows"]:
        assert r["images_per_s"] == pytest.approx(4 * 1000 / r["ms_per_step"], rel=1e-9)
        assert r["projected_hours"] == pytest.approx(100 * math.ceil(1281167 / 4) * r["ms_per_step"] / 3.6e6)
        assert f"| {r['row']} | {r['method']} | {r['pipeline']} | {r['ms_per_step']:.1f} |" in table
