"""Figures: several runs in one PNG, the trials of a configuration as mean and +- sd band (computed by hand here),
and ours against the paper."""
import os

import pytest

from experiments.cli import plot_main
from experiments.plots import configuration_name, curves, group_runs
from tests.experiments.fake_runs import write_run

PNG = b"\x89PNG\r\n\x1a\n"


def test_trials_of_a_configuration_are_grouped_by_folder_name():
    runs = ["save/student_model/S_resnet8_T_resnet32_digits_kd_r_0.1_a_0.9_b_0.0_1",
            "save/student_model/S_resnet8_T_resnet32_digits_kd_r_0.1_a_0.9_b_0.0_2",
            "save/student_model/S_resnet8_T_resnet32_digits_crd_r_1.0_a_0.0_b_0.8_1",
            "save/models/resnet8_digits_lr_0.05_decay_0.0005_trial_3/"]
    assert configuration_name(runs[3]) == "resnet8_digits_lr_0.05_decay_0.0005"
    groups = group_runs(runs)
    assert list(groups.values()) == [runs[:2], runs[2:3], runs[3:]]
    assert len(group_runs(runs, separate=True)) == 4


def test_mean_and_band_over_trials_are_per_epoch_mean_and_sample_sd(tmp_path):
    a, b = str(tmp_path / "kd_1"), str(tmp_path / "kd_2")
    write_run(a, [50.0, 60.0, 70.0])
    write_run(b, [54.0, 64.0])  # stopped after epoch 2: the curve covers the epochs both reached
    epochs, mean, sd = curves([a, b], "test_acc")
    assert epochs == [1, 2] and mean == [52.0, 62.0]
    assert sd == pytest.approx([2 ** 1.5, 2 ** 1.5])  # |50 - 54| / sqrt(2)


def test_plot_runs_writes_one_png_for_several_runs(tmp_path):
    runs = []
    for trial, accs in enumerate(([50.0, 60.0], [52.0, 63.0], [51.0, 59.0]), start=1):
        runs.append(str(tmp_path / f"S_resnet8_T_resnet32_digits_kd_r_0.1_a_0.9_b_0.0_{trial}"))
        write_run(runs[-1], accs)
    runs.append(str(tmp_path / "resnet8_digits_lr_0.05_decay_0.0005_trial_1"))
    write_run(runs[-1], [40.0, 55.0])
    out, said = str(tmp_path / "figs" / "curves.png"), []
    assert plot_main(runs + ["--out", out, "--labels", "KD,scratch"], said.append) == out
    with open(out, "rb") as f:
        assert f.read(8) == PNG
    from matplotlib.image import imread
    assert imread(out).shape[:2] == (540, 1440)  # 12 x 4.5 inches at 120 dpi
    assert said == [f"written: {out} (2 configurations, 4 runs)"]


def test_plot_runs_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        plot_main([str(tmp_path / "missing")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no epoch rows"):
        plot_main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
