"""Cells into processes: the cells of one teacher train side by side in one ``train_student.py`` process.

Side-by-side runs (``--distill a,b`` and ``--model_s x,y``) share the batches and one teacher forward, and each run
equals the run it would be alone; ``--trials N`` adds N students per configuration. Cells merge only when that holds
for every one of them, which is checked with train_student.py's own parser: the merged command must give exactly the
cells' (student, method) configurations, each with the options of the cell's own command (a method's own option,
e.g. ``--dkd_warmup``, may ride along for the others, which do not read it). Methods that want deterministic cuDNN
(ICKD) merge only with each other, since that setting is global to a process.

Grouping: ``cell`` (one process per cell), ``pair`` (per teacher -> student column, the default) or ``teacher``
(per teacher: columns with the same methods and flags merge too).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import distiller_zoo
from assembly.options import parse_configurations

from .cells import STUDENT_SCRIPT, TEACHER_SCRIPT, Cell, CellError, quiet_parse, shared_student_parser
from .runs import is_finished

GROUPINGS = ("cell", "pair", "teacher")


@dataclass
class Job:
    """One process: ``python script argv``, the cells it trains and the teacher commands it waits for."""

    script: str
    argv: List[str]
    cells: List[Cell] = field(default_factory=list)
    requires: List[Tuple[str, ...]] = field(default_factory=list)  # keys of the jobs that must finish first
    runs: List[Tuple[Optional[str], int]] = field(default_factory=list)  # (run folder or None, epochs) it trains

    def finished(self) -> bool:
        """Every run it trains has its last epoch's row (a run folder not known yet counts as unfinished)."""
        return bool(self.runs) and all(is_finished(d, epochs) for d, epochs in self.runs)

    @property
    def key(self) -> Tuple[str, ...]:
        return (self.script,) + tuple(self.argv)

    @property
    def name(self) -> str:
        """A file-name-safe name for the job's log: what it trains and a short hash of its command."""
        if not self.cells:  # a teacher no row shows
            what, where = "teacher", self.argv[self.argv.index("--model") + 1]
        elif self.cells[0].kind == "student":
            what, where = "+".join(dict.fromkeys(c.distill for c in self.cells)), self.cells[0].column.name
        else:
            first = self.cells[0]
            what, where = first.kind, (first.model if first.kind == "teacher" else first.column.name)
        digest = hashlib.sha1(" ".join(self.key).encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{what}_{where}")[:80] + f"_{digest}"

    def command(self, python: str = "python") -> List[str]:
        return [python, self.script] + list(self.argv)


def option_items(argv: Sequence[str], parser) -> List[Tuple[str, List[str]]]:
    """``argv`` as (dest, tokens) items, one per option given, in order (``--x=1`` and ``--x 1`` alike)."""
    actions = parser._option_string_actions  # noqa: SLF001 - argparse has no public accessor
    items, i = [], 0
    tokens = list(argv)
    while i < len(tokens):
        token = tokens[i]
        flag, _, inline = token.partition("=")
        action = actions.get(flag) if token.startswith("-") else None
        if action is None:
            raise CellError(f"cannot merge a command with '{token}' (not an option of {STUDENT_SCRIPT})")
        if "=" in token and token.startswith("--"):
            items.append((action.dest, [token]))
            i += 1
            continue
        take = 0
        if action.nargs is None:
            take = 1
        elif action.nargs == "?":
            take = int(i + 1 < len(tokens) and not re.match(r"-[A-Za-z-]", tokens[i + 1]))
        items.append((action.dest, tokens[i:i + 1 + take]))
        i += 1 + take
    return items


def merged_argv(argvs: Sequence[Sequence[str]], parser) -> Optional[List[str]]:
    """One command for several cells: ``--model_s`` and ``--distill`` values joined, every other option once;
    None when two cells give one option different values."""
    joined = {"model_s": [], "distill": []}
    chosen: Dict[str, List[str]] = {}
    order: List[str] = []
    for argv in argvs:
        for dest, tokens in option_items(argv, parser):
            if dest in joined:
                value = tokens[1] if len(tokens) > 1 else tokens[0].partition("=")[2]
                if value not in joined[dest]:
                    joined[dest].append(value)
                if dest not in order:
                    order.append(dest)
                continue
            if dest in chosen:
                if chosen[dest] != tokens:
                    return None
                continue
            chosen[dest] = tokens
            order.append(dest)
    out: List[str] = []
    for dest in order:
        if dest in joined:
            out += [f"--{dest}", ",".join(joined[dest])]
        else:
            out += chosen[dest]
    return out


def foreign_options(distill: str) -> set:
    """Options declared by other methods and not by ``distill``: a merged command may set them for its others."""
    own = {o.name for o in distiller_zoo.REGISTRY[distill].options}
    others = {o.name for cls in distiller_zoo.REGISTRY.values() for o in cls.options}
    return others - own


def comparable(options, distill: str) -> Dict:
    ignore = foreign_options(distill)
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ignore}


def try_merge(cells: Sequence[Cell], parser, own_options: Dict[int, object]) -> Optional[List[str]]:
    """The merged command of ``cells`` when it trains exactly them, each as its own command would; else None."""
    if len({distiller_zoo.REGISTRY[c.distill].deterministic_cudnn for c in cells}) > 1:
        return None
    argv = merged_argv([c.commands[0] for c in cells], parser)
    if argv is None:
        return None
    try:
        configs = quiet_parse(lambda a: parse_configurations(a, parser), argv, "merged command")
    except CellError:
        return None
    wanted = {(c.model, c.distill): c for c in cells}
    got = [(c.options.model_s, c.options.distill) for c in configs]
    if len(got) != len(cells) or set(got) != set(wanted):
        return None
    for config in configs:
        cell = wanted[(config.options.model_s, config.options.distill)]
        if comparable(config.options, cell.distill) != comparable(own_options[id(cell)], cell.distill):
            return None
    return argv


def bucket(cell: Cell, grouping: str):
    """Cells may merge only within a bucket: the same teacher runs (and, for ``pair``, the same column)."""
    base = (tuple(cell.requires), cell.column.teacher, cell.trials)
    return base + ((cell.column.student,) if grouping == "pair" else ())


def student_jobs(cells: Sequence[Cell], grouping: str = "pair") -> List[Job]:
    """The processes that train ``cells`` (student cells, each with one command), merged per ``grouping``."""
    if grouping not in GROUPINGS:
        raise CellError(f"--group must be one of {', '.join(GROUPINGS)}, got '{grouping}'")
    parser = shared_student_parser()
    unique: Dict[Tuple[str, ...], Cell] = {}
    same_command: Dict[Tuple[str, ...], List[Cell]] = {}
    for cell in cells:
        key = tuple(cell.commands[0])
        unique.setdefault(key, cell)
        same_command.setdefault(key, []).append(cell)
    own = {id(c): quiet_parse(lambda a: parse_configurations(a, parser), c.commands[0], c.label)[0].options
           for c in unique.values()}
    groups: List[List[Cell]] = []
    merged: List[List[str]] = []
    for cell in unique.values():
        placed = False
        if grouping != "cell":
            for i, group in enumerate(groups):
                if bucket(group[0], "pair") != bucket(cell, "pair"):
                    continue
                argv = try_merge(group + [cell], parser, own)
                if argv is not None:
                    group.append(cell)
                    merged[i] = argv
                    placed = True
                    break
        if not placed:
            groups.append([cell])
            merged.append(list(cell.commands[0]))
    if grouping == "teacher":
        groups, merged = merge_columns(groups, merged, parser, own)
    jobs = []
    for group, argv in zip(groups, merged):
        members = [c for cell in group for c in same_command[tuple(cell.commands[0])]]
        runs = [(d, cell.epochs) for cell in group for d in cell.run_dirs]
        requires = [(TEACHER_SCRIPT,) + argv for argv, _, _ in group[0].requires]
        jobs.append(Job(STUDENT_SCRIPT, argv, members, requires, runs))
    return jobs


def merge_columns(groups, merged, parser, own):
    """``teacher`` grouping: whole column groups of one teacher merge when their methods and flags agree."""
    out_groups: List[List[Cell]] = []
    out_argv: List[List[str]] = []
    for group, argv in zip(groups, merged):
        for i, other in enumerate(out_groups):
            if bucket(other[0], "teacher") != bucket(group[0], "teacher"):
                continue
            together = try_merge(other + group, parser, own)
            if together is not None:
                other.extend(group)
                out_argv[i] = together
                break
        else:
            out_groups.append(list(group))
            out_argv.append(argv)
    return out_groups, out_argv


def table_jobs(cells: Sequence[Cell], grouping: str = "pair") -> List[Job]:
    """Every process of a table: the teachers' runs first, then the students trained alone, then the methods.
    Cells with the same command (a teacher shared by columns, BYOT's four classifiers of one run) share a job."""
    jobs: Dict[Tuple[str, ...], Job] = {}
    students = []
    for cell in cells:
        if cell.script is None:
            continue
        if cell.kind == "student":
            students.append(cell)
            continue
        for argv, run_dir in zip(cell.commands, cell.run_dirs):
            job = jobs.setdefault((cell.script,) + tuple(argv),
                                  Job(cell.script, list(argv), runs=[(run_dir, cell.epochs)]))
            job.cells.append(cell)
    for cell in students:  # a table without a teacher row still trains the teachers its students need
        for argv, run_dir, epochs in cell.requires:
            jobs.setdefault((TEACHER_SCRIPT,) + argv, Job(TEACHER_SCRIPT, list(argv), runs=[(run_dir, epochs)]))
    teachers = [j for j in jobs.values() if j.script == TEACHER_SCRIPT and (not j.cells or j.cells[0].kind == "teacher")]
    vanilla = [j for j in jobs.values() if j not in teachers]
    return teachers + vanilla + student_jobs(students, grouping)
