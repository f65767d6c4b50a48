"""assembly/options.py: the options of trial i (frozen options, replaced) and RepDistiller's run-folder names."""
from assembly.options import parse_student_options, parse_teacher_options, student_run_name, teacher_run_name, \
    trial_id, trial_options


def test_trial_i_moves_seed_and_trial_and_keeps_the_shared_data_order():
    opt = parse_student_options(["--distill", "kd", "--seed", "5", "--trial", "1", "--trials", "3"])
    third = trial_options(opt, 2)
    assert (third.seed, third.trial, third.trials, third.data_seed) == (7, "3", 1, 5)
    assert (opt.seed, opt.trial, opt.trials) == (5, "1", 3)  # the run's own options are untouched
    assert [trial_id("a", i) for i in range(3)] == ["a", "a_1", "a_2"]


def test_run_folder_names_are_repdistillers():
    opt = parse_student_options(["--distill", "kd", "--model_s", "resnet8"])
    assert student_run_name(opt, "resnet32x4") == "S_resnet8_T_resnet32x4_cifar100_kd_r_0.1_a_0.9_b_0.0_1"
    assert student_run_name(opt, "self", [1, 2, 3]).startswith("S_resnet8_1-2-3_T_self_")
    teacher = parse_teacher_options(["--model", "resnet8"])
    assert teacher_run_name(teacher) == "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"
