"""The data set's recipe in the precedence rule (dataset/recipes.py; mdistiller's ImageNet configs, spec 3.4) and
--global_batch_size."""
import pytest

from assembly.options import parse_configurations, parse_student_options, parse_teacher_options

R34_R18 = ["--dataset", "imagenet", "--model_t", "ResNet34", "--model_s", "ResNet18"]
R50_MV1 = ["--dataset", "imagenet", "--model_t", "ResNet50", "--model_s", "MobileNetV1"]


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_imagenet_kd_takes_mdistillers_recipe():
    o = parse_student_options(R34_R18 + ["--distill", "kd"])
    assert (o.epochs, o.learning_rate, o.weight_decay, o.lr_decay_epochs, o.momentum) == (100, 0.2, 1e-4,
                                                                                          "30,60,90", 0.9)
    assert (o.gamma, o.alpha, o.beta, o.kd_T) == (0.5, 0.5, 0.0, 1.0)
    # the global batch of 512 in one process, the lr being that batch's
    assert (o.global_batch_size, o.batch_size, o.lr_scale) == (512, 512, "none")


def test_per_pair_and_per_method_values():
    dkd = parse_student_options(R34_R18 + ["--distill", "dkd"])
    assert (dkd.dkd_beta, dkd.kd_T, dkd.dkd_warmup, dkd.gamma, dkd.beta) == (0.5, 1.0, 1, 1.0, 1.0)
    assert parse_student_options(R50_MV1 + ["--distill", "dkd"]).dkd_beta == 2.0
    crd = parse_student_options(R50_MV1 + ["--distill", "crd"])
    assert (crd.global_batch_size, crd.learning_rate, crd.nce_replace, crd.beta) == (256, 0.1, True, 0.8)
    mlkd = parse_student_options(R34_R18 + ["--distill", "mlkd"])
    assert (mlkd.learning_rate, mlkd.gamma, mlkd.beta, mlkd.kd_T, mlkd.epochs) == (0.1, 0.5, 0.5, 1.0, 100)
    assert parse_student_options(R50_MV1 + ["--distill", "mlkd"]).learning_rate == 0.2
    assert parse_student_options(R34_R18 + ["--distill", "kd", "--optimizer", "dot"]).dot_delta == 0.09


def test_a_flag_the_recipe_option_and_an_addon_beat_the_data_set():
    o = parse_student_options(R34_R18 + ["--distill", "kd", "--epochs", "3", "--kd_T", "4"])
    assert (o.epochs, o.kd_T, o.learning_rate) == (3, 4.0, 0.2)
    # --logit_stand's per-pair preset (T 2, -a 9 for a pair it has no log of) beats the data set's T 1
    ls = parse_student_options(R34_R18 + ["--distill", "kd", "--logit_stand"])
    assert (ls.kd_T, ls.alpha) == (2.0, 9.0)
    # a method's named recipe beats it too: MLKD's long one sets 480 epochs
    assert parse_student_options(R34_R18 + ["--distill", "mlkd", "--recipe", "long"]).epochs == 480


def test_the_start_of_a_run_says_where_the_values_came_from():
    [config] = parse_configurations(R34_R18 + ["--distill", "kd"])
    line = config.describe()
    assert "--dataset imagenet (mdistiller) kd (ResNet34 -> ResNet18): " in line and "kd_T=1.0" in line
    assert "batch_size=512" in line and "--global_batch_size 512 / 1 process" in line


def test_an_explicit_per_process_batch_replaces_the_recipes_global_one():
    o = parse_student_options(R34_R18 + ["--distill", "kd", "--batch_size", "64"])
    assert (o.batch_size, o.global_batch_size, o.lr_scale) == (64, None, "linear")
    with pytest.raises(SystemExit, match="--batch_size .* and --global_batch_size .* both set the batch"):
        parse_student_options(R34_R18 + ["--batch_size", "64", "--global_batch_size", "128"])


def test_the_global_batch_splits_over_torchruns_processes(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    o = parse_student_options(R34_R18 + ["--distill", "kd"])
    assert (o.batch_size, o.learning_rate, o.lr_scale) == (128, 0.2, "none")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit, match="--global_batch_size 512 does not split over 3 processes"):
        parse_student_options(R34_R18 + ["--distill", "kd"])


def test_teachers_and_cifar_runs():
    t = parse_teacher_options(["--dataset", "imagenet", "--model", "ResNet34"])
    assert (t.epochs, t.learning_rate, t.batch_size, t.save_freq) == (100, 0.2, 512, 10)
    tiny = parse_teacher_options(["--dataset", "tiny_imagenet", "--model", "ResNet18"])
    assert (tiny.epochs, tiny.learning_rate, tiny.lr_decay_epochs, tiny.weight_decay) == (200, 0.2, "60,120,160", 5e-4)
    # CIFAR has no data-set recipe: RepDistiller's defaults, per-process batch
    c = parse_student_options(["--distill", "kd"])
    assert (c.epochs, c.batch_size, c.global_batch_size, c.kd_T, c.nce_replace) == (240, 64, None, 4, False)


def test_a_torchvision_file_name_names_the_teacher_on_imagenet_only(tmp_path):
    path = str(tmp_path / "resnet34-333f7ec4.pth")
    o = parse_student_options(["--dataset", "imagenet", "--path_t", path, "--model_s", "ResNet18", "--distill",
                               "dkd"])
    assert o.dkd_beta == 0.5  # the pair (ResNet34 -> ResNet18) was read from the file name
    cifar = parse_configurations(["--path_t", path, "--distill", "kd"])[0]
    assert "ResNet34" not in cifar.describe()


def test_the_recipe_has_a_name_and_none_turns_it_off():
    o = parse_student_options(R34_R18 + ["--distill", "kd", "--data_recipe", "none"])
    assert (o.epochs, o.kd_T, o.learning_rate, o.batch_size, o.global_batch_size) == (240, 4, 0.05, 64, None)
    assert parse_student_options(R34_R18 + ["--distill", "kd", "--data_recipe", "mdistiller"]).epochs == 100
    with pytest.raises(SystemExit, match="--data_recipe torchdistill: --dataset imagenet has no recipe of that name "
                                         r"\(its recipes: mdistiller, none\)"):
        parse_student_options(R34_R18 + ["--distill", "kd", "--data_recipe", "torchdistill"])
    with pytest.raises(SystemExit, match="--dataset cifar100 has no recipe of that name"):
        parse_teacher_options(["--data_recipe", "mdistiller"])
