"""Summaries from run folders (written by hand): mean, sample sd and difference to the paper from a hand computation,
incomplete cells marked, last vs best epoch, the markdown/CSV/LaTeX text, and the teacher check."""
import csv
import io
import os

import pytest

from experiments.cells import Settings, published_teacher_path, table_cells
from experiments.cli import write_summaries
from experiments.runs import run_value
from experiments.summary import cell_text, csv_text, latex, markdown, summarize, teacher_warnings
from experiments.table import load_table
from tests.experiments.fake_runs import small_table, write_run, write_summary


@pytest.fixture
def finished_table(tmp_path):
    """small_table's runs: teacher 60 -> 85; students alone: two of three trials finished; KD: three trials."""
    table = small_table()
    cells = table_cells(table, Settings(save_dir=str(tmp_path)))
    by = {c.row.label: c for c in cells}
    write_run(by["Teacher"].run_dirs[0], [60.0, 85.0])
    vanilla = by["Student"].run_dirs
    write_run(vanilla[0], [65.0, 69.0])
    write_run(vanilla[1], [72.0, 71.0])
    write_run(vanilla[2], [66.0])  # interrupted after epoch 1 of 2: not counted
    for run_dir, accs in zip(by["KD"].run_dirs, ([73.0, 70.0], [71.0, 71.0], [70.0, 72.5])):
        write_run(run_dir, accs)
    return table, cells


def test_mean_sd_and_difference_are_the_hand_computed_ones(finished_table):
    table, cells = finished_table
    last = summarize(table, cells, "last")
    kd = last.entry(table.rows[2], table.columns[0])
    # last epochs 70, 71, 72.5: mean 71.1667; deviations -1.1667, -0.1667, 1.3333; sd sqrt(3.1667 / 2) = 1.2583
    assert kd.values == [70.0, 71.0, 72.5]
    assert kd.mean == pytest.approx(71.166667, abs=1e-6) and kd.sd == pytest.approx(1.258306, abs=1e-6)
    assert kd.difference == pytest.approx(0.506667, abs=1e-6)
    assert cell_text(kd) == "71.17 ± 1.26 (70.66, +0.51)"
    best = summarize(table, cells, "best").entry(table.rows[2], table.columns[0])
    assert best.values == [73.0, 71.0, 72.5] and cell_text(best) == "72.17 ± 1.04 (70.66, +1.51)"


def test_a_cell_with_fewer_finished_trials_than_asked_is_marked(finished_table):
    table, cells = finished_table
    vanilla = summarize(table, cells, "last").entry(table.rows[1], table.columns[0])
    # 69 and 71 finished, the third run stopped after epoch 1: mean 70, sd sqrt(2) = 1.41
    assert (vanilla.count, vanilla.asked, vanilla.incomplete) == (2, 3, True)
    assert cell_text(vanilla) == "70.00 ± 1.41 [2/3] (70.00, +0.00)"


def test_markdown_has_the_paper_s_layout(finished_table):
    table, cells = finished_table
    text = markdown(summarize(table, cells, "last"))
    assert text.splitlines()[:6] == [
        "### Small, last epoch (the paper's protocol)", "",
        "| | resnet14 -> resnet8 |", "|---|---|",
        "| Teacher | 85.00 (80.00, +5.00) |",
        "| Student | 70.00 ± 1.41 [2/3] (70.00, +0.00) |"]


def test_csv_holds_every_cell_with_its_trials(finished_table):
    table, cells = finished_table
    rows = list(csv.DictReader(io.StringIO(csv_text([summarize(table, cells, "last")]))))
    kd = next(r for r in rows if r["row"] == "KD")
    assert (kd["selection"], kd["teacher"], kd["student"], kd["trials_finished"], kd["trials_asked"]) == (
        "last", "resnet14", "resnet8", "3", "3")
    assert (kd["mean"], kd["sd"], kd["paper"], kd["difference"]) == ("71.1667", "1.2583", "70.6600", "0.5067")
    assert kd["values"] == "70.0000;71.0000;72.5000"


def test_latex_is_a_booktabs_tabular(finished_table):
    table, cells = finished_table
    text = latex(summarize(table, cells, "last"))
    assert r"\begin{tabular}{lc}" in text and r"\toprule" in text and r"\bottomrule" in text
    assert r"Teacher & resnet14 \\" in text and r"Student & resnet8 \\" in text
    assert r"KD & $71.17 \pm 1.26$ {\scriptsize (70.66, $+0.51$)} \\" in text
    assert r"Student & $70.00 \pm 1.41$$^{2/3}$ {\scriptsize (70.00, $+0.00$)} \\" in text


def test_a_trained_teacher_far_from_the_paper_s_is_reported(finished_table):
    table, cells = finished_table
    (line,) = teacher_warnings(table, cells)
    assert line.startswith("warning: teacher resnet14 (trained here, ") and "tests at 85.00, the paper's at 80.00 " \
        "(+5.00): its students are not comparable with the paper's" in line
    assert teacher_warnings(table, cells, tolerance=6.0) == []


def test_a_published_teacher_is_checked_with_the_accuracy_its_students_measured(tmp_path):
    save = str(tmp_path)
    published = published_teacher_path(save, "resnet110")
    os.makedirs(os.path.dirname(published))
    open(published, "wb").close()
    table = load_table("ickd")
    cells = table_cells(table, Settings(save_dir=save))
    kd = next(c for c in cells if c.row.label == "KD" and c.column.name == "resnet110 -> resnet32")
    write_summary(kd.run_dirs[0], teacher_acc=70.27)  # RepDistiller issue #29's download
    warnings = [w for w in teacher_warnings(table, cells) if "resnet110" in w]
    assert len(warnings) == 1 and "(published checkpoint " in warnings[0]
    assert "tests at 70.27, the paper's at 74.31 (-4.04)" in warnings[0]
    row = next(r for r in table.rows if r.kind == "teacher")
    column = next(c for c in table.columns if c.name == "resnet110 -> resnet32")
    assert cell_text(summarize(table, cells, "last").entry(row, column)) == "70.27 (74.31, -4.04)"


def test_byot_reads_every_classifier_at_the_deepest_one_s_best_epoch(tmp_path):
    table = load_table("byot")
    cells = table_cells(table, Settings(save_dir=str(tmp_path), trials=1))
    run_dir = next(c for c in cells if c.column.student == "multi_resnet18_kd").run_dirs[0]
    accs = [70.0] * 199 + [77.0]
    accs[172] = 78.73  # epoch 173: the deepest classifier's best
    c1 = [60.0] * 200
    c1[172] = 66.57
    write_run(run_dir, accs, test_acc_c1=c1, test_acc_c4=accs)
    assert run_value(run_dir, 200, "test_acc_c1", "best") == 66.57
    assert run_value(run_dir, 200, "test_acc_c1", "last") == 60.0
    best = summarize(table, cells, "best")
    assert cell_text(best.entry(table.rows[0], table.columns[0])) == "66.57 (66.57, +0.00)"


def test_summaries_are_written_as_markdown_csv_latex_and_a_figure(finished_table, tmp_path):
    table, cells = finished_table
    out = []
    paths = write_summaries(table, cells, str(tmp_path / "out"), 1.0, out.append)
    assert [os.path.basename(p) for p in paths] == ["summary.md", "summary.csv", "summary.tex", "ours_vs_paper.png"]
    with open(paths[3], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "### Small, best epoch" in out[0] and "warning: teacher resnet14" in out[0]
