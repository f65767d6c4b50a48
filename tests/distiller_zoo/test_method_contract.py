"""The method contract of the restructured core: declared options, `defaults`, and typed per-method options.

A method's flags are generated from its declarations, so two methods reading one flag must share one
declaration; `defaults` may only name options the student parser offers; and a built method sees its own
typed, frozen options and nothing else of the run.
"""
import dataclasses
from types import SimpleNamespace

import pytest
import torch

import distiller_zoo
from assembly import options as assembly_options
from assembly.options import parse_student_options, student_parser
from assembly.student import build_student_side
from dataset.core import TensorImageSet
from distiller_zoo import CRD, DKD, POST, PRE, REGISTRY, MilestoneChecking
from engine.teacher import TEACHER_OPTIONS, Teacher
from models import build_model
from tests.methods import method_options, options_among

METHOD_CLASSES = [REGISTRY[n] for n in distiller_zoo.available()] + list(distiller_zoo.ADDONS)


def test_the_contract_covers_every_registered_method_and_the_add_ons():
    assert assembly_options.method_classes() == METHOD_CLASSES
    assert {MilestoneChecking, distiller_zoo.LS.LogitStandardization} <= set(distiller_zoo.ADDONS)
    assert {"kd", "crd", "correlation", "dkd", "hint", "kdrefine", "ickd", "byot", "ce"} <= set(REGISTRY)


def test_one_option_name_is_one_declaration_across_methods_and_toolkit():
    declared = {}
    toolkit = (assembly_options.RUN_OPTIONS + assembly_options.STUDENT_SCRIPT_OPTIONS
               + assembly_options.architecture_options(short_blocktype=True) + TEACHER_OPTIONS)
    for owner, opts in [("toolkit", toolkit)] + [(cls.__name__, cls.options) for cls in METHOD_CLASSES]:
        names = [o.name for o in opts]
        assert len(names) == len(set(names)), f"{owner} declares an option twice: {names}"
        for o in opts:
            first_owner, first = declared.setdefault(o.name, (owner, o))
            assert o is first, f"--{o.name}: {owner} and {first_owner} declare it separately"
    # the shared ones named by the design: CRD and CC read one --feat_dim; kd_T is the base class's
    feat_dim = {cls.__name__: next(o for o in cls.options if o.name == "feat_dim")
                for cls in METHOD_CLASSES if any(o.name == "feat_dim" for o in cls.options)}
    assert set(feat_dim) == {"CRD", "CC"} and feat_dim["CRD"] is feat_dim["CC"]
    assert distiller_zoo.CC.options[0] is CRD.options[0] is DKD.options[0] and CRD.options[0].name == "kd_T"


def test_two_declarations_of_one_name_are_refused_by_the_parser_generator():
    feat_dim = CRD.options[2]
    assert feat_dim.name == "feat_dim"
    assert assembly_options.collect([feat_dim, feat_dim]) == [feat_dim]
    other = dataclasses.replace(feat_dim, default=64)
    with pytest.raises(ValueError, match="--feat_dim is declared twice"):
        assembly_options.collect([feat_dim, other])


def test_every_method_option_is_a_student_flag_with_its_declared_default():
    parsed = vars(student_parser().parse_args([]))
    for cls in METHOD_CLASSES:
        for o in cls.options:
            assert o.name in parsed, (cls.__name__, o.name)
            assert parsed[o.name] == o.default, (cls.__name__, o.name)


@pytest.mark.parametrize("cls", METHOD_CLASSES, ids=lambda c: c.__name__)
def test_defaults_name_only_options_of_the_student_parser(cls):
    parsed = vars(student_parser().parse_args([]))
    assert set(cls.defaults) <= set(parsed), sorted(set(cls.defaults) - set(parsed))
    # a method's default (learning rate, recipe, weights) is what a run of it gets without flags
    if cls in (MilestoneChecking, REGISTRY["ce"]):
        return
    run = parse_student_options(["--distill", cls.name])
    for name, value in cls.defaults.items():
        assert getattr(run, name) == value, (cls.name, name)


def test_defaults_naming_an_unknown_option_are_refused():
    class Typo(distiller_zoo.KD):
        name = "typo"
        defaults = {"gamma": 1.0, "learnig_rate": 0.1}

    with pytest.raises(ValueError, match="--distill typo: its defaults name unknown options learnig_rate"):
        assembly_options.check_method_defaults("--distill typo", Typo.defaults,
                                               set(vars(student_parser().parse_args([]))))


def test_feature_needs_are_declared_kinds():
    for cls in METHOD_CLASSES:
        assert cls.student_features in (None, POST, PRE) and cls.teacher_features in (None, POST, PRE), cls
    assert (REGISTRY["abound"].student_features, REGISTRY["abound"].teacher_features) == (PRE, PRE)
    assert (REGISTRY["crd"].student_features, REGISTRY["crd"].teacher_features) == (POST, POST)
    assert (REGISTRY["kd"].student_features, REGISTRY["kd"].teacher_features) == (None, None)


@pytest.mark.parametrize("cls", METHOD_CLASSES, ids=lambda c: c.__name__)
def test_typed_options_hold_exactly_the_declared_ones_with_their_defaults(cls):
    fresh = cls.options_type()()
    fields = [f.name for f in dataclasses.fields(fresh)]
    assert fields == [o.name for o in cls.options]
    assert all(getattr(fresh, o.name) == o.default for o in cls.options)
    run = parse_student_options(["--distill", "kd"])
    assert cls.select_options(run) == fresh  # kd sets none of the methods' own options


def test_method_options_refuses_what_the_method_does_not_declare():
    assert method_options("crd", nce_k=8).nce_k == 8
    with pytest.raises(TypeError, match="dkd_beta"):
        method_options("crd", dkd_beta=2.0)
    assert not hasattr(options_among("crd", nce_k=8, dkd_beta=2.0), "dkd_beta")


def _data(n=20):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return SimpleNamespace(train=TensorImageSet(images, torch.arange(n) % 10, [0.5] * 3, [0.25] * 3),
                           num_classes=10)


def test_a_built_method_receives_only_its_own_frozen_options():
    opt = parse_student_options(["--model_s", "resnet8", "--distill", "crd", "--path_t", "t.pth", "--device", "cpu",
                                 "--nce_k", "8", "--feat_dim", "16", "--dkd_beta", "3", "--mc", "1",
                                 "--mc_weight", "0.25"])
    teacher = Teacher.of(build_model("resnet8", num_classes=10))
    _, distiller = build_student_side(opt, _data(), torch.device("cpu"), teacher)
    assert isinstance(distiller, MilestoneChecking) and isinstance(distiller.inner, CRD)
    crd = distiller.inner.method_options
    assert type(crd) is CRD.options_type()
    assert crd.nce_k == 8 and crd.feat_dim == 16 and crd.kd_T == opt.kd_T
    for foreign in ("dkd_beta", "mc_weight", "learning_rate", "model_s", "gamma"):
        assert not hasattr(crd, foreign), foreign
    with pytest.raises(dataclasses.FrozenInstanceError):
        crd.nce_k = 9
    mc = distiller.method_options
    assert mc.mc_weight == 0.25 and distiller.mc_weight == 0.25
    assert not hasattr(mc, "nce_k") and not hasattr(mc, "dkd_beta")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mc.mc_weight = 1.0
    # the whole run's options are frozen too
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.nce_k = 9
    assert dataclasses.replace(opt, nce_k=9).nce_k == 9 and opt.nce_k == 8


def test_the_method_reads_the_teachers_feature_network_not_the_wrapper():
    opt = parse_student_options(["--model_s", "resnet8", "--distill", "hint", "--path_t", "t.pth",
                                 "--device", "cpu"])
    members = [build_model("resnet8", num_classes=10), build_model("resnet8x4", num_classes=10)]
    teacher = Teacher(members, feat_index=1, names=["resnet8", "resnet8x4"])
    _, distiller = build_student_side(opt, _data(), torch.device("cpu"), teacher)
    # FitNet's regressor (--hint_layer 2) maps the student's 32 channels to the feature member's 128
    # (resnet8x4); member 0 (resnet8) has 32 there
    assert (distiller.regressor.conv.in_channels, distiller.regressor.conv.out_channels) == (32, 128)
