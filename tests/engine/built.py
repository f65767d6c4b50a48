"""Shared by the engine tests: real resolved options from keyword values, and a method's build context."""
import argparse

from assembly.options import parse_student_options, student_parser
from distiller_zoo import DistillContext

# switches that take no value (--overwrite, --debug): False is their default, True the bare flag
SWITCHES = {a.dest for a in student_parser()._actions if isinstance(a, argparse._StoreTrueAction)}  # noqa: SLF001


def student_argv(**values):
    """``--name value`` for every value; None leaves the flag's default, a switch is given bare when True."""
    argv = []
    for name, value in values.items():
        if value is None or (name in SWITCHES and not value):
            continue
        argv += [f"--{name}"] if name in SWITCHES else [f"--{name}", str(value)]
    return argv


def student_options(**values):
    return parse_student_options(student_argv(**values))


def method_context(cls, opt, student, teacher, **kw):
    """A DistillContext holding ``cls``'s typed options taken from the resolved ``opt``."""
    return DistillContext(cls.select_options(opt), student, teacher, student_name=opt.model_s, **kw)
