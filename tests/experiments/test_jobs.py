"""Cells into processes: the cells of a teacher -> student pair train side by side in one train_student.py process
only where each run equals the run of its own command (checked with the real parser)."""
import os

import pytest

from assembly.options import parse_configurations, student_run_name, trial_options
from experiments.cells import Settings, shared_student_parser, table_cells
from experiments.jobs import merged_argv, option_items, student_jobs, table_jobs
from experiments.table import load_table
from tests.experiments.fake_runs import small_table, write_run


@pytest.fixture(scope="module")
def fashion_cells():
    return table_cells(load_table("fashion"), Settings(save_dir="save_j"))


def configs(argv):
    return parse_configurations(argv, shared_student_parser())


def test_option_items_split_a_command_by_option():
    items = option_items(["--distill", "kd", "-a", "1", "--nesterov", "--trials=3", "--overwrite"],
                         shared_student_parser())
    assert items == [("distill", ["--distill", "kd"]), ("alpha", ["-a", "1"]), ("nesterov", ["--nesterov"]),
                     ("trials", ["--trials=3"]), ("overwrite", ["--overwrite"])]


def test_merging_joins_methods_and_refuses_an_option_given_two_ways():
    parser = shared_student_parser()
    assert merged_argv([["--model_s", "resnet8", "--distill", "kd", "--dkd_warmup", "2"],
                        ["--model_s", "resnet8", "--distill", "dkd", "--dkd_warmup", "2"]], parser) == [
        "--model_s", "resnet8", "--distill", "kd,dkd", "--dkd_warmup", "2"]
    assert merged_argv([["--distill", "ickd", "-a", "0"], ["--distill", "ickd", "-a", "1"]], parser) is None


def test_a_pair_s_methods_share_a_process_and_each_run_is_its_own_command_s(fashion_cells):
    pair = [c for c in fashion_cells if c.kind == "student" and c.column.name == "resnet56 -> resnet20"]
    jobs = student_jobs(pair, "pair")
    merged = [j for j in jobs if len(j.cells) > 1]
    assert len(merged) == 1 and [c.distill for c in merged[0].cells] == ["kd", "crd", "dkd", "kdrefine"]
    # DKD's own --dkd_warmup 1 rides along; the others do not read it
    assert "--dkd_warmup" in merged[0].argv
    together = {c.options.distill: c.options for c in configs(merged[0].argv)}
    for cell in merged[0].cells:
        alone = configs(cell.commands[0])[0].options
        mine = together[cell.distill]
        assert (mine.gamma, mine.alpha, mine.beta, mine.learning_rate) == (
            alone.gamma, alone.alpha, alone.beta, alone.learning_rate)
        names = [student_run_name(trial_options(mine, i) if i else mine, "resnet56") for i in range(3)]
        assert [os.path.join("save_j", "student_model", n) for n in names] == cell.run_dirs
    assert together["dkd"].dkd_warmup == 1 and together["kdrefine"].learning_rate == 0.01
    # ICKD wants deterministic cuDNN, a setting of the whole process: it trains alone
    assert [j.cells[0].distill for j in jobs if len(j.cells) == 1] == ["ickd"]


def test_grouping_by_cell_pair_or_teacher(fashion_cells):
    students = [c for c in fashion_cells if c.kind == "student"]
    assert len(student_jobs(students, "cell")) == 15
    assert len(student_jobs(students, "pair")) == 6  # per column: kd,crd,dkd,kdrefine and ickd alone
    byot = [c for c in table_cells(load_table("byot")) if c.kind == "student"]
    # BYOT's five rows read one run per model; per teacher (none) both models share one process
    assert len(student_jobs(byot, "pair")) == 2
    (both,) = student_jobs(byot, "teacher")
    assert {(c.options.model_s, c.options.distill) for c in configs(both.argv)} == {
        ("multi_resnet18_kd", "byot"), ("multi_resnet50_kd", "byot")}


def test_two_settings_of_one_method_never_share_a_process():
    ickd = [c for c in table_cells(load_table("ickd")) if c.kind == "student" and c.distill == "ickd"
            and c.column.name == "resnet32x4 -> resnet8x4"]
    jobs = student_jobs(ickd, "pair")
    assert len(jobs) == 2 and {configs(j.argv)[0].options.alpha for j in jobs} == {0.0, 1.0}


def test_table_jobs_put_teachers_first_and_students_after_the_teacher_they_need(tmp_path):
    cells = table_cells(small_table(), Settings(save_dir=str(tmp_path)))
    jobs = table_jobs(cells, "pair")
    assert [j.script for j in jobs] == ["train_teacher.py"] * 4 + ["train_student.py"]
    teacher, student = jobs[0], jobs[-1]
    assert student.requires == [teacher.key]
    assert not teacher.finished()
    write_run(teacher.runs[0][0], [50.0, 60.0])
    assert teacher.finished()
    write_run(student.runs[0][0], [50.0])  # one epoch of two: unfinished, --resume auto continues it
    assert not student.finished() and "--resume" in student.argv
