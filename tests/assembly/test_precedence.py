"""assembly/options.py's precedence rule: a flag given, else the method's default, else the toolkit's; the loss
weights as a set; RepDistiller's learning-rate rule; per-method normalisation."""
import argparse

import pytest

from assembly.options import (check_method_defaults, explicit_dests, labelled, parse_student_options, parse_teacher_options,
                              resolve)


def test_method_defaults_fill_only_options_not_given():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--kd_T", type=float, default=4)
    p.add_argument("-b", "--batch_size", type=int, default=64)
    p.add_argument("--amp", nargs="?", const=True, default=False)
    # what resolve's toolkit rules read besides the method's defaults
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_seed", type=int, default=None)
    p.add_argument("--blocktype", default="AMBB")
    p.add_argument("--block_depth", default=None)
    argv = ["--epochs", "240", "-b", "32", "--amp"]
    raw = p.parse_args(argv)
    explicit = explicit_dests(p, argv)
    assert explicit == {"epochs", "batch_size", "amp"}
    defaults = labelled({"epochs": 200, "learning_rate": 0.1, "kd_T": 3.0, "batch_size": 128}, "--distill x")
    values, sources = resolve(raw, explicit, defaults, "resnet8")
    assert {k for k, v in sources.items() if v == "--distill x"} == {"learning_rate", "kd_T"}
    assert (values["epochs"], values["learning_rate"], values["kd_T"], values["batch_size"]) == (240, 0.1, 3.0, 32)
    assert values["amp"] is True and values["data_seed"] == 0 and sources["data_seed"] == "--seed"


def test_a_default_that_names_no_option_is_refused():
    with pytest.raises(ValueError, match="--distill x: its defaults name unknown options not_an_option"):
        check_method_defaults("--distill x", {"epochs": 200, "not_an_option": 1}, {"epochs", "learning_rate"})


def test_a_method_recipe_through_the_student_parser():
    # no -r/-a/-b given: KD's loss weights are its defaults; a given flag stays
    opt = parse_student_options(["--distill", "kd", "--epochs", "3"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.epochs) == (0.1, 0.9, 0.0, 3)


def test_missing_loss_weights_are_the_methods_and_minus_r_is_1_when_only_some_are_given():
    # missing -r/-a/-b: the method's recipe; RepDistiller's -r default of 1 when only -a/-b given
    o = parse_student_options(["--distill", "kd"])
    assert (o.gamma, o.alpha, o.beta) == (0.1, 0.9, 0.0)
    o = parse_student_options(["--distill", "kd", "-a", "0.5"])
    assert (o.gamma, o.alpha, o.beta) == (1.0, 0.5, 0.0)
    o = parse_student_options(["--distill", "crd", "-r", "0.3"])
    assert (o.gamma, o.alpha, o.beta) == (0.3, 0.0, 0.8)
    # a teacher trains with the cross-entropy term alone
    o = parse_teacher_options(["--model", "resnet8"])
    assert (o.gamma, o.alpha, o.beta) == (1.0, 0.0, 0.0)


def test_student_lr_defaults_follow_repdistiller():
    assert parse_student_options(["--model_s", "resnet8"]).learning_rate == 0.05
    assert parse_student_options(["--model_s", "MobileNetV2"]).learning_rate == 0.01
    assert parse_student_options(["--model_s", "ShuffleV1"]).learning_rate == 0.01
    # explicitly given: kept (RepDistiller overrode even this; the toolkit respects the user)
    assert parse_student_options(["--model_s", "ShuffleV2", "--learning_rate", "0.02"]).learning_rate == 0.02
    assert parse_teacher_options(["--model", "ShuffleV2"]).learning_rate == 0.01


def test_resolved_options_are_frozen():
    import dataclasses
    opt = parse_student_options(["--distill", "kd"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.gamma = 2.0
    assert dataclasses.replace(opt, gamma=2.0).gamma == 2.0 and opt.gamma == 0.1


