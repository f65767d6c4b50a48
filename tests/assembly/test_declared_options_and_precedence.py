"""The student parser is generated from the declarations, and one precedence rule resolves every default."""
import pytest

import distiller_zoo
from assembly.options import collect, parse_configurations, parse_student_options, student_parser
from distiller_zoo.base import Distiller
from helper.option import Option


def flags(parser):
    return {s for action in parser._actions for s in action.option_strings}


def test_repdistiller_flag_names_and_short_forms_are_generated():
    have = flags(student_parser())
    assert {"-r", "--gamma", "-a", "--alpha", "-b", "--beta", "--feat_dim", "--nce_k", "--nce_t", "--nce_m",
            "--mode", "--hint_layer", "--init_epochs", "--kd_T", "-t", "--blocktype", "--dkd_beta", "--mc",
            "--B4_weight", "--teacher_bn", "--logit_multiplier"} <= have


def test_a_flag_shared_by_methods_is_one_declaration():
    feat_dim = [o for cls in distiller_zoo.REGISTRY.values() for o in cls.options if o.name == "feat_dim"]
    assert len(feat_dim) == 2 and feat_dim[0] is feat_dim[1]  # CRD's and CC's


def test_two_different_declarations_of_one_name_are_refused():
    with pytest.raises(ValueError, match="--x is declared twice"):
        collect([Option("x", int, 1), Option("x", int, 2)])


def test_a_new_method_brings_its_flag_in_its_own_class():
    @distiller_zoo.register("tmp_logit_method")
    class TmpMethod(Distiller):
        options = Distiller.options + (Option("tmp_scale", float, 0.25, "a new method's own flag"),)
        defaults = {"gamma": 0.5, "alpha": 0.5, "beta": 0.0}

    try:
        assert "--tmp_scale" in flags(student_parser())
        opt = parse_student_options(["--distill", "tmp_logit_method", "--tmp_scale", "2"])
        own = TmpMethod.select_options(opt)
        assert own.tmp_scale == 2.0 and own.kd_T == 4
        assert not hasattr(own, "nce_k")  # only its own options, not the whole namespace
        assert (opt.gamma, opt.alpha, opt.beta) == (0.5, 0.5, 0.0)
    finally:
        del distiller_zoo.REGISTRY["tmp_logit_method"]


def test_flag_then_method_default_then_toolkit_default():
    [c] = parse_configurations(["--distill", "kdrefine"])
    assert c.options.learning_rate == 0.01 and c.sources["learning_rate"] == "--distill kdrefine"
    [c] = parse_configurations(["--distill", "kdrefine", "--learning_rate", "0.2"])
    assert c.options.learning_rate == 0.2 and "learning_rate" not in c.sources
    [c] = parse_configurations(["--distill", "kd", "--model_s", "MobileNetV2"])
    assert c.options.learning_rate == 0.01 and c.sources["learning_rate"].startswith("RepDistiller's rule")
    [c] = parse_configurations(["--distill", "kd"])
    assert c.options.learning_rate == 0.05
    [c] = parse_configurations(["--distill", "byot", "--epochs", "3"])
    assert (c.options.epochs, c.options.batch_size, c.options.kd_T) == (3, 128, 3.0)
    assert "epochs" not in c.sources and c.sources["batch_size"] == "--distill byot"


def test_data_seed_follows_seed_unless_given():
    assert parse_student_options(["--seed", "7"]).data_seed == 7
    assert parse_student_options(["--seed", "7", "--data_seed", "2"]).data_seed == 2


def test_the_run_start_line_says_where_defaults_came_from():
    [c] = parse_configurations(["--distill", "kdrefine", "--seed", "3"])
    line = c.describe()
    assert "--distill kdrefine: learning_rate=0.01, gamma=0.1, alpha=0.9, beta=0.0" in line
    assert "--seed: data_seed=3" in line


def test_side_by_side_methods_keep_their_own_learning_rates():
    configs = parse_configurations(["--distill", "kd,kdrefine"])
    assert [c.options.learning_rate for c in configs] == [0.05, 0.01]


def test_side_by_side_refuses_a_recipe_that_changes_what_the_runs_share():
    with pytest.raises(SystemExit, match="share --epochs"):
        parse_configurations(["--distill", "kd,checkpointkd"])
    configs = parse_configurations(["--distill", "kd,checkpointkd", "--epochs", "5", "--batch_size", "32"])
    assert [c.options.kd_T for c in configs] == [4, 5.0]
    assert [c.options.nesterov for c in configs] == [False, True]
