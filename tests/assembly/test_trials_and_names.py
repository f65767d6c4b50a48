"""assembly/options.py: the options of trial i (frozen options, replaced) and RepDistiller's run-folder names."""
from assembly.options import parse_student_options, parse_teacher_options, student_run_name, teacher_run_name, \
    trial_id, trial_options
from engine.teacher import arch_from_folder


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


def test_a_cosine_or_multistep_run_has_its_own_folder():
    opt = parse_student_options(["--distill", "checkpointkd", "--model_s", "resnet32_a", "--lr_schedule", "cosine"])
    assert student_run_name(opt, "resnet110_a") == \
        "S_resnet32_a_T_resnet110_a_cifar100_checkpointkd_cosine_r_0.5_a_0.5_b_0.0_1"
    teacher = parse_teacher_options(["--model", "resnet110_a", "--lr_schedule", "multistep", "--learning_rate", "0.1"])
    assert teacher_run_name(teacher) == "resnet110_a_cifar100_lr_0.1_multistep_decay_0.0005_trial_0"
    # the folder still names its architecture for the teacher loader (longest model-name prefix)
    assert arch_from_folder(teacher_run_name(teacher)) == "resnet110_a"


def test_schedule_options_parse_in_both_scripts():
    for parse, extra in ((parse_teacher_options, []), (parse_student_options, ["--distill", "kd"])):
        default = parse(extra)
        assert (default.lr_schedule, default.warm_up) == ("step", False)
        # BYOT's spelling and the toolkit's; multistep takes its decay factor from --lr_decay_rate
        for flag in ("--warm-up", "--warm_up"):
            opt = parse(extra + [flag, "--lr_schedule", "multistep", "--lr_decay_rate", "0.2"])
            assert (opt.warm_up, opt.lr_schedule, opt.lr_decay_rate) == (True, "multistep", 0.2)
