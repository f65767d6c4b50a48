"""A paper's table as data: ``experiments/tables/<name>.json``, read and checked into :class:`Table`.

A table has columns (teacher -> student pairs, or a student alone) and rows (the teacher, the student trained alone,
one row per method with its flags), and the paper's number for every cell. Adding a table is adding a file::

    {"title": "...", "source": "where the numbers are from", "protocol": "last",
     "dataset": "cifar100", "trials": 5, "teachers": "repdistiller",
     "flags": [], "teacher_flags": [], "student_flags": [], "vanilla_flags": [],
     "columns": [{"teacher": "resnet32x4", "student": "resnet8x4", "part": "optional heading"}],
     "rows": [{"label": "Teacher", "kind": "teacher", "paper": [79.42]},
              {"label": "Student", "kind": "vanilla", "paper": [72.50]},
              {"label": "KD", "distill": "kd", "flags": [], "paper": [73.33]}]}

- ``protocol``: which epoch the paper reports (``last``, ``best``, or ``best_last10``: the best of the last 10);
  the summaries show the last and the best epoch in any case, and the paper's protocol too.
- ``teachers``: ``repdistiller`` (RepDistiller's published checkpoints when fetched, else trained here) or
  ``train``; ``teacher_trials`` teacher runs per architecture (trial ids 0, 1, ...).
- ``flags`` go to every run, ``teacher_flags`` / ``vanilla_flags`` / ``student_flags`` to the runs of one kind, a
  row's ``flags`` to its cells. A row's flags may name ``{teacher}`` (the checkpoint of teacher run 0),
  ``{teacher_run0}``, ``{teacher_run1}``, ... (teacher run folders), ``{teacher_last_epoch}`` and
  ``{teacher_mid_epoch}`` (the last snapshot and the one nearest the middle).
- A row may replace students (``"students": {"resnet20": "represnet20"}``) and read another metric than the
  test top-1 (``"metric": "test_acc_c1"``). ``paper``: a number, ``null`` (none reported) or ``"n/a"`` (the paper
  has none because the method does not apply: that cell is not run).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

TABLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")
PROTOCOLS = ("last", "best", "best_last10")
KINDS = ("teacher", "vanilla", "student")
TEACHER_SOURCES = ("repdistiller", "train")
NOT_APPLICABLE = "n/a"

PaperValue = Union[float, str, None]

_TABLE_KEYS = {"title", "source", "protocol", "notes", "dataset", "trials", "teachers", "teacher_trials", "flags",
               "teacher_flags", "student_flags", "vanilla_flags", "columns", "rows"}
_REQUIRED = {"title", "source", "protocol", "dataset", "trials", "teachers", "columns", "rows"}
_COLUMN_KEYS = {"teacher", "student", "part"}
_ROW_KEYS = {"label", "kind", "distill", "flags", "students", "metric", "paper"}


class TableError(ValueError):
    """A table file that does not describe a table; the message names the file and the entry."""


@dataclass(frozen=True)
class Column:
    student: str
    teacher: Optional[str] = None
    part: str = ""

    @property
    def name(self) -> str:
        return f"{self.teacher} -> {self.student}" if self.teacher else self.student


@dataclass(frozen=True)
class Row:
    label: str
    kind: str = "student"
    distill: Optional[str] = None
    flags: Tuple[str, ...] = ()
    students: Tuple[Tuple[str, str], ...] = ()
    metric: str = "test_acc"
    paper: Tuple[PaperValue, ...] = ()

    def student_for(self, column: Column) -> str:
        """The student this row trains in ``column`` (a row may replace it, e.g. by its re-parameterisable form)."""
        return dict(self.students).get(column.student, column.student)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str
    protocol: str
    dataset: str
    trials: int
    teachers: str
    columns: Tuple[Column, ...]
    rows: Tuple[Row, ...]
    notes: Tuple[str, ...] = ()
    teacher_trials: int = 1
    flags: Tuple[str, ...] = ()
    teacher_flags: Tuple[str, ...] = ()
    student_flags: Tuple[str, ...] = ()
    vanilla_flags: Tuple[str, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def parts(self) -> List[str]:
        """The column headings in order of first appearance (one table per part in the summaries)."""
        seen: List[str] = []
        for c in self.columns:
            if c.part not in seen:
                seen.append(c.part)
        return seen


def available_tables(folder: str = TABLES_DIR) -> List[str]:
    return sorted(name[:-len(".json")] for name in os.listdir(folder) if name.endswith(".json"))


def table_path(name: str, folder: str = TABLES_DIR) -> str:
    """The file of table ``name``, or of a path to a table file given directly."""
    if name.endswith(".json") and os.path.isfile(name):
        return name
    path = os.path.join(folder, f"{name}.json")
    if not os.path.isfile(path):
        raise TableError(f"unknown table '{name}'; choose one of: {', '.join(available_tables(folder))} "
                         f"(or give a table file ending in .json)")
    return path


def load_table(name: str, folder: str = TABLES_DIR) -> Table:
    path = table_path(name, folder)
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise TableError(f"'{path}' is not valid JSON ({exc})") from None
    return parse_table(data, os.path.basename(path)[:-len(".json")], path)


def _strings(value, where: str) -> Tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(f"{where} must be a list of strings (command-line tokens), got {value!r}")
    return tuple(value)


def _unknown(keys, allowed, where: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise TableError(f"{where} has unknown keys {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _paper(values, n_columns: int, where: str) -> Tuple[PaperValue, ...]:
    if values is None:
        return (None,) * n_columns
    if not isinstance(values, list) or len(values) != n_columns:
        raise TableError(f"{where}: 'paper' needs one entry per column ({n_columns}), got {values!r}")
    for v in values:
        if not (v is None or v == NOT_APPLICABLE or (isinstance(v, (int, float)) and not isinstance(v, bool))):
            raise TableError(f"{where}: paper entries are numbers, null or \"{NOT_APPLICABLE}\", got {v!r}")
    return tuple(float(v) if isinstance(v, (int, float)) else v for v in values)


def parse_table(data: Dict, name: str, path: str = "") -> Table:
    """A :class:`Table` from the JSON object of a table file; every problem is a :class:`TableError` naming it."""
    where = f"table '{path or name}'"
    if not isinstance(data, dict):
        raise TableError(f"{where} must hold a JSON object")
    _unknown(data, _TABLE_KEYS, where)
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise TableError(f"{where} lacks {', '.join(missing)}")
    if data["protocol"] not in PROTOCOLS:
        raise TableError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {data['protocol']!r}")
    if data["teachers"] not in TEACHER_SOURCES:
        raise TableError(f"{where}: teachers must be one of {', '.join(TEACHER_SOURCES)}, got {data['teachers']!r}")
    for key in ("trials", "teacher_trials"):
        if key in data and not (isinstance(data[key], int) and data[key] >= 1):
            raise TableError(f"{where}: {key} must be a positive integer, got {data[key]!r}")
    columns = []
    for i, c in enumerate(data["columns"]):
        cw = f"{where}, column {i + 1}"
        if not isinstance(c, dict) or "student" not in c:
            raise TableError(f"{cw} needs at least a 'student'")
        _unknown(c, _COLUMN_KEYS, cw)
        columns.append(Column(student=c["student"], teacher=c.get("teacher"), part=c.get("part", "")))
    if not columns:
        raise TableError(f"{where} has no columns")
    rows = []
    for i, r in enumerate(data["rows"]):
        rw = f"{where}, row {i + 1}"
        if not isinstance(r, dict) or "label" not in r:
            raise TableError(f"{rw} needs a 'label'")
        rw = f"{where}, row '{r['label']}'"
        _unknown(r, _ROW_KEYS, rw)
        kind = r.get("kind", "student")
        if kind not in KINDS:
            raise TableError(f"{rw}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if (kind == "student") != ("distill" in r):
            raise TableError(f"{rw}: a student row names its --distill method, a {kind} row none")
        students = r.get("students", {})
        if not isinstance(students, dict):
            raise TableError(f"{rw}: 'students' maps a column's student to this row's, got {students!r}")
        rows.append(Row(label=r["label"], kind=kind, distill=r.get("distill"), flags=_strings(r.get("flags", []), rw),
                        students=tuple(students.items()), metric=r.get("metric", "test_acc"),
                        paper=_paper(r.get("paper"), len(columns), rw)))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise TableError(f"{where}: row labels must differ ({', '.join(labels)})")
    if any(r.kind != "student" for r in rows) and any(c.teacher is None for c in columns):
        raise TableError(f"{where}: teacher and vanilla rows need a teacher in every column")
    return Table(name=name, title=data["title"], source=data["source"], protocol=data["protocol"],
                 dataset=data["dataset"], trials=data["trials"], teachers=data["teachers"],
                 columns=tuple(columns), rows=tuple(rows), notes=tuple(data.get("notes", ())),
                 teacher_trials=data.get("teacher_trials", 1), flags=_strings(data.get("flags", []), where),
                 teacher_flags=_strings(data.get("teacher_flags", []), where),
                 student_flags=_strings(data.get("student_flags", []), where),
                 vanilla_flags=_strings(data.get("vanilla_flags", []), where), path=path)


def paper_number(value: PaperValue) -> Optional[float]:
    return value if isinstance(value, float) else None


def describe(tables: Sequence[Table]) -> str:
    """One line per table: name, size and title (what ``reproduce_table.py`` without a table prints)."""
    width = max(len(t.name) for t in tables)
    return "\n".join(f"{t.name:{width}s}  {len(t.rows):2d} rows x {len(t.columns):2d} columns  {t.title}"
                     for t in tables)
