"""A table's cells as command lines of the entry scripts, and the run folders each of them writes.

Every cell is what a user would run by hand: ``train_teacher.py`` for a teacher (one run per teacher trial) and for
the student trained alone (one run per trial: trial k+1 with ``--seed k``, the batches of ``--data_seed 0`` as the
students' ``--trials`` share them), ``train_student.py --trials N`` for a method. Its run folders come from the
entry scripts' own parsers and naming rules (:mod:`assembly.options`), so they are the folders the runs write.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from assembly.options import parse_configurations, parse_teacher_options, student_parser, student_run_name, \
    teacher_run_name, trial_options
import distiller_zoo
from engine.teacher import member_names, split_list, teacher_label, teacher_tag
from models import arch_options, build_model

from .table import NOT_APPLICABLE, Column, PaperValue, Row, Table

TEACHER_SCRIPT = "train_teacher.py"
STUDENT_SCRIPT = "train_student.py"
TEACHER_CHOICES = ("auto", "fetched", "trained")
# RepDistiller's published teachers: save/models/<arch>_vanilla/ckpt_epoch_240.pth
PUBLISHED_EPOCH = 240
DEFAULT_SAVE_DIR = "./save"
DEFAULT_DATA_ROOT = "./data"
SNAPSHOT_NAME = re.compile(r"ckpt_epoch_(\d+)\.pth")


def published_teacher_path(save_dir: str, arch: str) -> str:
    """Where ``scripts/fetch_pretrained_teachers.sh`` puts RepDistiller's published teacher of ``arch``."""
    return os.path.join(save_dir, "models", f"{arch}_vanilla", f"ckpt_epoch_{PUBLISHED_EPOCH}.pth")


class CellError(ValueError):
    """A cell whose command the entry script would refuse; the message names the table, row and column."""


@dataclass(frozen=True)
class Settings:
    """What the user chose for every cell: folders, trials, a shortened schedule, where teachers come from."""

    save_dir: str = DEFAULT_SAVE_DIR
    data_root: str = DEFAULT_DATA_ROOT
    trials: Optional[int] = None
    epochs: Optional[int] = None
    teachers: str = "auto"
    teacher_args: Tuple[str, ...] = ()
    student_args: Tuple[str, ...] = ()


@dataclass
class Cell:
    """One entry of the table: the runs behind it and where they write."""

    table: Table
    row: Row
    column: Column
    kind: str
    script: Optional[str]  # None: nothing to run (a published teacher, a cell the paper marks n/a)
    commands: List[List[str]]
    run_dirs: List[str]  # one per trial
    epochs: int
    model: str  # the architecture trained (its checkpoint file names)
    trials: int
    # the teacher runs that must finish first: (train_teacher.py arguments, run folder, epochs)
    requires: List[Tuple[Tuple[str, ...], str, int]] = field(default_factory=list)
    fetched: bool = False

    @property
    def paper(self) -> PaperValue:
        return self.row.paper[self.table.columns.index(self.column)]

    @property
    def not_applicable(self) -> bool:
        return self.paper == NOT_APPLICABLE

    @property
    def label(self) -> str:
        return f"{self.row.label} | {self.column.name}"

    @property
    def distill(self) -> Optional[str]:
        return self.row.distill


def quiet_parse(parse, argv: Sequence[str], where: str):
    """``parse(argv)`` with argparse's usage text kept off the console; a refusal is a :class:`CellError`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse(list(argv))
    except SystemExit as exc:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        reason = lines[-1] if lines else str(exc.code)
        raise CellError(f"{where}: the command does not parse ({reason}): {' '.join(argv)}") from None
    except ValueError as exc:
        raise CellError(f"{where}: {exc}") from None


def common_flags(settings: Settings) -> List[str]:
    out = []
    if settings.save_dir != DEFAULT_SAVE_DIR:
        out += ["--save_dir", settings.save_dir]
    if settings.data_root != DEFAULT_DATA_ROOT:
        out += ["--data_root", settings.data_root]
    return out


def scaled_epochs(argv: List[str], opt, epochs: Optional[int]) -> List[str]:
    """``argv`` shortened to ``epochs`` (a smoke run): the lr milestones and the snapshot period scale with it."""
    if epochs is None or epochs == opt.epochs:
        return argv
    ratio = epochs / opt.epochs
    milestones = [max(1, round(int(m) * ratio)) for m in str(opt.lr_decay_epochs).split(",") if m.strip()]
    return argv + ["--epochs", str(epochs), "--lr_decay_epochs", ",".join(map(str, milestones)),
                   "--save_freq", str(max(1, round(opt.save_freq * ratio)))]


def snapshot_epochs(opt) -> Tuple[int, int]:
    """(last, middle) snapshot epochs of a teacher run: ckpt_epoch_N.pth exists every --save_freq epochs."""
    every = opt.save_freq
    if every <= 0 or every > opt.epochs:
        raise ValueError(f"the teacher keeps no ckpt_epoch_N.pth (--save_freq {every}, --epochs {opt.epochs})")
    last = opt.epochs - opt.epochs % every
    middle = max(every, every * round(opt.epochs / 2 / every))
    return last, middle


def block_depth_of(model: str, depth):
    """The block depth a my* model's run folder carries (None for every other architecture)."""
    if "block_depth" not in arch_options(model):
        return None
    return build_model(model, num_classes=10, block_depth=depth).block_depth


@dataclass
class TeacherSet:
    """The teacher runs of one architecture: their commands and folders, and the checkpoint students use."""

    arch: str
    commands: List[List[str]]
    run_dirs: List[str]
    checkpoint: str
    fetched: bool
    snapshots: Optional[Tuple[int, int]]
    epochs: int

    def placeholders(self) -> Dict[str, str]:
        values = {"teacher": self.checkpoint}
        values.update({f"teacher_run{k}": d for k, d in enumerate(self.run_dirs)})
        if self.snapshots is not None:
            values["teacher_last_epoch"], values["teacher_mid_epoch"] = map(str, self.snapshots)
        return values


def teacher_script_run(argv: List[str], model: str, settings: Settings, where: str):
    """A train_teacher.py command (a teacher, or a student trained alone) shortened to ``--epochs`` where asked:
    ``(argv, its options, its run folder)``."""
    opt = quiet_parse(parse_teacher_options, argv, where)
    if settings.epochs is not None:
        argv = scaled_epochs(argv, opt, settings.epochs)
        opt = quiet_parse(parse_teacher_options, argv, where)
    return argv, opt, os.path.join(opt.save_dir, "models", teacher_run_name(opt, block_depth_of(model, opt.block_depth)))


def teacher_set(table: Table, arch: str, settings: Settings) -> TeacherSet:
    where = f"table '{table.name}', teacher {arch}"
    published = published_teacher_path(settings.save_dir, arch)
    fetched = table.teachers == "repdistiller" and (
        settings.teachers == "fetched" or (settings.teachers == "auto" and os.path.isfile(published)))
    commands, run_dirs, snapshots, epochs = [], [], None, PUBLISHED_EPOCH
    for k in range(table.teacher_trials):
        argv = (["--model", arch, "--dataset", table.dataset] + list(table.flags) + list(table.teacher_flags)
                + ["--trial", str(k), "--seed", str(k)] + common_flags(settings) + ["--resume", "auto"]
                + list(settings.teacher_args))
        argv, opt, run_dir = teacher_script_run(argv, arch, settings, where)
        commands.append(argv)
        run_dirs.append(run_dir)
        epochs = opt.epochs
        if k == 0:
            try:
                snapshots = snapshot_epochs(opt)
            except ValueError:
                snapshots = None
    if fetched:
        return TeacherSet(arch, [], [os.path.dirname(published)], published, True, None, PUBLISHED_EPOCH)
    return TeacherSet(arch, commands, run_dirs, os.path.join(run_dirs[0], f"{arch}_last.pth"), False, snapshots, epochs)


def fill(tokens: Sequence[str], values: Dict[str, str], where: str) -> List[str]:
    out = []
    for token in tokens:
        try:
            out.append(token.format_map(values) if "{" in token else token)
        except KeyError as exc:
            known = ", ".join("{" + k + "}" for k in sorted(values))
            raise CellError(f"{where}: unknown placeholder {{{exc.args[0]}}} in '{token}' (this table knows "
                            f"{known})") from None
    return out


def student_cell(table: Table, row: Row, column: Column, settings: Settings, teachers: Dict[str, TeacherSet],
                 trials: int) -> Cell:
    where = f"table '{table.name}', row '{row.label}', column {column.name}"
    model_s = row.student_for(column)
    teacher = teachers.get(column.teacher) if column.teacher else None
    values = teacher.placeholders() if teacher else {}
    own = fill(row.flags, values, where)
    head = []
    if teacher is not None:
        head = ([] if "--path_t" in own else ["--path_t", teacher.checkpoint]) + ["--model_t", teacher.arch]
    argv = (head + ["--model_s", model_s, "--distill", row.distill, "--dataset", table.dataset] + list(table.flags)
            + list(table.student_flags) + own + ["--trial", "1", "--trials", str(trials)] + common_flags(settings)
            + ["--resume", "auto"] + list(settings.student_args))
    opt = parse_student(argv, where)
    if settings.epochs is not None:
        argv = scaled_epochs(argv, opt, settings.epochs)
        opt = parse_student(argv, where)
    label = planned_teacher_label(opt) if distiller_zoo.REGISTRY[opt.distill].needs_teacher else "self"
    depth = block_depth_of(model_s, opt.block_depth)
    run_dirs = [os.path.join(opt.save_dir, "student_model",
                             student_run_name(trial_options(opt, i) if i else opt, label, depth))
                for i in range(trials)]
    requires = [(tuple(c), d, teacher.epochs) for c, d in zip(teacher.commands, teacher.run_dirs)] if teacher else []
    return Cell(table, row, column, "student", STUDENT_SCRIPT, [argv], run_dirs, opt.epochs, model_s, trials,
                requires)


def planned_teacher_label(opt) -> str:
    """The teacher's name in its students' run folders: :func:`engine.teacher.teacher_label` once the teacher's
    checkpoints exist; before, the name they will give (a ``ckpt_epoch_N.pth`` holds epoch N)."""
    paths = split_list(opt.path_t)
    epochs = split_list(opt.teacher_epochs)
    if epochs:
        folder = paths[0] if os.path.isdir(paths[0]) or not paths[0].endswith(".pth") else os.path.dirname(paths[0])
        paths = [os.path.join(folder, f"ckpt_epoch_{e}.pth") for e in epochs]
    if all(os.path.isfile(p) for p in paths):
        return teacher_label(opt.path_t, opt.model_t, opt.teacher_epochs, opt.teacher_bn)
    names = member_names(paths, opt.model_t)
    if len(paths) == 1 and not epochs and opt.teacher_bn == "eval":
        return names[0]
    from_names = [SNAPSHOT_NAME.fullmatch(os.path.basename(p)) for p in paths]
    known = [int(m.group(1)) if m else None for m in from_names]
    return teacher_tag(names, known, len(paths), bool(epochs), opt.teacher_bn) or names[0]


def vanilla_cell(table: Table, row: Row, column: Column, settings: Settings, trials: int) -> Cell:
    where = f"table '{table.name}', row '{row.label}', column {column.name}"
    model = row.student_for(column)
    commands, run_dirs, epochs = [], [], 0
    for k in range(trials):
        argv = (["--model", model, "--dataset", table.dataset] + list(table.flags) + list(table.vanilla_flags)
                + ["--trial", str(k + 1), "--seed", str(k), "--data_seed", "0"] + common_flags(settings)
                + ["--resume", "auto"] + list(settings.teacher_args))
        argv, opt, run_dir = teacher_script_run(argv, model, settings, where)
        commands.append(argv)
        run_dirs.append(run_dir)
        epochs = opt.epochs
    return Cell(table, row, column, "vanilla", TEACHER_SCRIPT, commands, run_dirs, epochs, model, trials)


def teacher_cell(table: Table, row: Row, column: Column, teacher: TeacherSet) -> Cell:
    script = None if teacher.fetched else TEACHER_SCRIPT
    return Cell(table, row, column, "teacher", script, [list(c) for c in teacher.commands], list(teacher.run_dirs),
                teacher.epochs, teacher.arch, len(teacher.run_dirs), fetched=teacher.fetched)


def table_cells(table: Table, settings: Settings = Settings()) -> List[Cell]:
    """Every cell of ``table``, row by row; a cell the paper marks n/a has no commands."""
    if settings.teachers not in TEACHER_CHOICES:
        raise CellError(f"--teachers must be one of {', '.join(TEACHER_CHOICES)}, got '{settings.teachers}'")
    if settings.teachers == "fetched" and table.teachers != "repdistiller":
        raise CellError(f"table '{table.name}' trains its own teachers (its recipe); --teachers fetched applies to "
                        "the tables of RepDistiller's published teachers")
    trials = settings.trials or table.trials
    teachers = {arch: teacher_set(table, arch, settings)
                for arch in dict.fromkeys(c.teacher for c in table.columns if c.teacher)}
    cells = []
    for row in table.rows:
        for column in table.columns:
            if row.paper[table.columns.index(column)] == NOT_APPLICABLE:
                cells.append(Cell(table, row, column, row.kind, None, [], [], 0, row.student_for(column), trials))
            elif row.kind == "teacher":
                cells.append(teacher_cell(table, row, column, teachers[column.teacher]))
            elif row.kind == "vanilla":
                cells.append(vanilla_cell(table, row, column, settings, trials))
            else:
                cells.append(student_cell(table, row, column, settings, teachers, trials))
    return cells


_STUDENT_PARSER = []


def shared_student_parser():
    """train_student.py's parser, built once for the many commands of a table."""
    if not _STUDENT_PARSER:
        _STUDENT_PARSER.append(student_parser())
    return _STUDENT_PARSER[0]


def parse_student(argv: Sequence[str], where: str):
    """The options of the first configuration of a train_student.py command (a :class:`CellError` if refused)."""
    return quiet_parse(lambda a: parse_configurations(a, shared_student_parser()), argv, where)[0].options
