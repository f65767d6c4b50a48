"""A table's runs summarised in the paper's layout: mean +- sd over trials next to the paper's number and the
difference, as markdown, CSV and LaTeX, with the teachers checked against the paper's.

Every cell is the mean and sample standard deviation over its finished trials of the top-1 at the last epoch
(RepDistiller's and KDrefine's convention), in a second table at the best epoch (mdistiller's), and, where the paper
uses it, the best of the last 10 epochs (CheckpointKD's). A cell with fewer finished trials than asked is marked
``[k/n]``. The teacher row shows the checkpoint the students distil from (a trained teacher's last epoch, a published
one's accuracy as the students' runs measured it) in every table.
"""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .cells import Cell
from .runs import SELECTION_TEXT, is_finished, run_value, summary_value
from .table import NOT_APPLICABLE, Column, PaperValue, Row, Table, paper_number

# a teacher this far (top-1 points) from the paper's is reported: its students are not comparable with the paper's
TEACHER_TOLERANCE = 1.0
MISSING = "–"


@dataclass
class Entry:
    """One cell's numbers under one selection."""

    values: List[float]
    asked: int
    paper: PaperValue
    not_applicable: bool = False

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> Optional[float]:
        """The sample standard deviation (n - 1), as the seed papers' "mean +- std"; None for one trial."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def difference(self) -> Optional[float]:
        paper = paper_number(self.paper)
        return None if paper is None or self.mean is None else self.mean - paper

    @property
    def incomplete(self) -> bool:
        return not self.not_applicable and 0 < self.count < self.asked


@dataclass
class Summary:
    table: Table
    selection: str
    entries: Dict[Tuple[str, str], Entry] = field(default_factory=dict)  # (row label, column name) -> Entry

    def entry(self, row: Row, column: Column) -> Entry:
        return self.entries[(row.label, column.name)]


def teacher_values(cell: Cell, cells: Sequence[Cell]) -> List[float]:
    """The accuracy of the teacher checkpoint(s) a column's students use: a trained teacher's runs at their last
    epoch; a published one as measured at the start of the column's student runs (summary.json teacher_acc)."""
    if not cell.fetched:
        return [v for v in (run_value(d, cell.epochs, "test_acc", "last") for d in cell.run_dirs) if v is not None]
    for other in cells:
        if other.kind == "student" and other.column == cell.column:
            for run_dir in other.run_dirs:
                value = summary_value(run_dir, "teacher_acc")
                if value is not None:
                    return [value]
    return []


def summarize(table: Table, cells: Sequence[Cell], selection: str) -> Summary:
    out = Summary(table, selection)
    for cell in cells:
        if cell.not_applicable:
            values = []
        elif cell.kind == "teacher":
            values = teacher_values(cell, cells)
        else:
            values = [v for v in (run_value(d, cell.epochs, cell.row.metric, selection) for d in cell.run_dirs)
                      if v is not None]
        asked = cell.trials if cell.kind != "teacher" or not cell.fetched else 1
        out.entries[(cell.row.label, cell.column.name)] = Entry(values, asked, cell.paper, cell.not_applicable)
    return out


def teacher_warnings(table: Table, cells: Sequence[Cell], tolerance: float = TEACHER_TOLERANCE) -> List[str]:
    """One line per teacher whose measured accuracy is more than ``tolerance`` points from the paper's."""
    lines, seen = [], set()
    for cell in cells:
        if cell.kind != "teacher" or cell.not_applicable or cell.model in seen:
            continue
        paper = paper_number(cell.paper)
        values = teacher_values(cell, cells)
        if paper is None or not values:
            continue
        seen.add(cell.model)
        ours = statistics.fmean(values)
        if abs(ours - paper) > tolerance:
            where = f"published checkpoint {cell.run_dirs[0]}" if cell.fetched else f"trained here, {cell.run_dirs[0]}"
            lines.append(f"warning: teacher {cell.model} ({where}) tests at {ours:.2f}, the paper's at {paper:.2f} "
                         f"({ours - paper:+.2f}): its students are not comparable with the paper's (RepDistiller "
                         f"issue #29: a downloaded resnet110 tested at 70.27 instead of 74.31)")
    return lines


def cell_text(entry: Entry, plus_minus: str = "±") -> str:
    """``74.12 ± 0.21 [3/5] (73.33, +0.79)``: ours, finished/asked when short, (the paper's, ours - paper)."""
    if entry.not_applicable:
        return NOT_APPLICABLE
    paper = paper_number(entry.paper)
    if entry.mean is None:
        ours = MISSING
    else:
        ours = f"{entry.mean:.2f}" + (f" {plus_minus} {entry.sd:.2f}" if entry.sd is not None else "")
        if entry.incomplete:
            ours += f" [{entry.count}/{entry.asked}]"
    if paper is None:
        return ours
    if entry.difference is None:
        return f"{ours} ({paper:.2f})"
    return f"{ours} ({paper:.2f}, {entry.difference:+.2f})"


def heading(summary: Summary, part: str) -> str:
    text = f"{summary.table.title}, {SELECTION_TEXT[summary.selection]}"
    has_paper = any(paper_number(v) is not None for row in summary.table.rows for v in row.paper)
    if has_paper and summary.selection == summary.table.protocol:
        text += " (the paper's protocol)"
    return text + (f": {part}" if part else "")


def markdown(summary: Summary) -> str:
    table = summary.table
    out = []
    for part in table.parts:
        columns = [c for c in table.columns if c.part == part]
        out.append(f"### {heading(summary, part)}\n")
        out.append("| | " + " | ".join(c.name for c in columns) + " |")
        out.append("|---|" + "---|" * len(columns))
        for row in table.rows:
            out.append(f"| {row.label} | " + " | ".join(cell_text(summary.entry(row, c)) for c in columns) + " |")
        out.append("")
    return "\n".join(out)


def legend(table: Table) -> str:
    lines = [f"Mean ± sample standard deviation over the finished trials ({table.trials} asked per cell unless "
             "given otherwise); in brackets k/n when only k of n trials finished; in parentheses the paper's number "
             "and ours minus the paper's. n/a: the paper has no number because the method does not apply (not run).",
             f"Paper numbers: {table.source}."]
    lines += table.notes
    return "\n".join(f"- {line}" for line in lines)


def csv_text(summaries: Sequence[Summary]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "selection", "part", "row", "teacher", "student", "metric", "trials_finished",
                "trials_asked", "mean", "sd", "paper", "difference", "values"])
    for s in summaries:
        for row in s.table.rows:
            for c in s.table.columns:
                e = s.entry(row, c)
                number = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
                paper = NOT_APPLICABLE if e.paper == NOT_APPLICABLE else number(paper_number(e.paper))
                w.writerow([s.table.name, s.selection, c.part, row.label, c.teacher or "", row.student_for(c),
                            row.metric, e.count, e.asked, number(e.mean), number(e.sd), paper, number(e.difference),
                            ";".join(f"{v:.4f}" for v in e.values)])
    return buf.getvalue()


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("->", r"$\rightarrow$"), ("±", r"$\pm$"), ("–", "--")):
        text = text.replace(a, b)
    return text


def latex_cell(entry: Entry) -> str:
    if entry.not_applicable:
        return "n/a"
    paper = paper_number(entry.paper)
    if entry.mean is None:
        ours = "--"
    else:
        ours = f"${entry.mean:.2f}" + (rf" \pm {entry.sd:.2f}" if entry.sd is not None else "") + "$"
        if entry.incomplete:
            ours += f"$^{{{entry.count}/{entry.asked}}}$"
    if paper is None:
        return ours
    tail = f"{paper:.2f}" + (f", ${entry.difference:+.2f}$" if entry.difference is not None else "")
    return ours + r" {\scriptsize (" + tail + ")}"


def latex(summary: Summary) -> str:
    table = summary.table
    out = []
    for part in table.parts:
        columns = [c for c in table.columns if c.part == part]
        teachers = any(c.teacher for c in columns)
        out.append(f"% {latex_escape(heading(summary, part))}")
        out.append(r"\begin{tabular}{l" + "c" * len(columns) + "}")
        out.append(r"\toprule")
        if teachers:
            out.append("Teacher & " + " & ".join(latex_escape(c.teacher or "") for c in columns) + r" \\")
        out.append("Student & " + " & ".join(latex_escape(c.student) for c in columns) + r" \\")
        out.append(r"\midrule")
        for row in table.rows:
            out.append(latex_escape(row.label) + " & " + " & ".join(latex_cell(summary.entry(row, c)) for c in columns)
                       + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append("")
    return "\n".join(out)


def selections_of(table: Table) -> List[str]:
    """The last and the best epoch always, and the paper's protocol when it is another one."""
    return ["last", "best"] + ([table.protocol] if table.protocol not in ("last", "best") else [])


def progress_counts(cells: Sequence[Cell]) -> Tuple[int, int]:
    """(cells with every trial finished, cells that run at all)."""
    runnable = [c for c in cells if c.script is not None]
    done = sum(all(is_finished(d, c.epochs) for d in c.run_dirs) for c in runnable)
    return done, len(runnable)

