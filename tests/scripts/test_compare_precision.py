import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    spec = importlib.util.spec_from_file_location("kd_compare_precision",
                                                  os.path.join(ROOT, "scripts", "compare_precision.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit):
        _load().parse_args(["--variants", "fp16"])
    assert _load().parse_args(["--variants", "bf16"]).variants == ["fp32", "bf16"]


@pytest.mark.slow
def test_compare_precision_runs_every_variant_with_the_same_trials(tmp_path, capsys):
    script = _load()
    save = tmp_path / "cmp"
    results = script.main(["--dataset", "digits", "--device", "cpu", "--epochs", "1", "--trials", "2",
                           "--variants", "fp32,bf16", "--model_t", "resnet8", "--model_s", "resnet8",
                           "--save_dir", str(save)])
    assert set(results) == {"fp32", "bf16"} and all(len(r["last"]) == 2 for r in results.values())
    # each trial's number is the one its own run folder recorded
    for variant in ("fp32", "bf16"):
        for i, trial in enumerate(("1", "2")):
            folder = save / variant / "student_model" / f"S_resnet8_T_resnet8_digits_kd_r_0.1_a_0.9_b_0.0_{trial}"
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["last_acc"] == results[variant]["last"][i]
            assert summary["options"]["amp"] == (variant == "bf16")
    table = (save / "compare_precision.md").read_text()
    fp32 = results["fp32"]["last"]
    assert f"| fp32 | {sum(fp32) / 2:.2f} +- " in table and "| bf16 |" in table
