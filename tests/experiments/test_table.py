"""The tables as data: every table file loads, every cell's command parses with the entry scripts' own parsers into
the paper's settings, cells never share a run folder, and a malformed table is one line naming it."""
import json
import os

import pytest

from assembly.options import parse_configurations, parse_teacher_options
from experiments.cells import CellError, Settings, published_teacher_path, shared_student_parser, table_cells
from experiments.cli import listing
from experiments.table import NOT_APPLICABLE, TableError, available_tables, load_table, parse_table
from tests.experiments.fake_runs import small_table

ALL = ["byot", "checkpointkd", "fashion", "ickd", "kdrefine", "modern", "quickstart", "repdistiller"]
# RepDistiller's scripts/run_cifar_distill.sh (-r, -a, -b) per method (-r 1 unless given)
REPDISTILLER_WEIGHTS = {"kd": (0.1, 0.9, 0.0), "hint": (1, 0, 100), "attention": (1, 0, 1000),
                        "similarity": (1, 0, 3000), "correlation": (1, 0, 0.02), "vid": (1, 0, 1), "rkd": (1, 0, 1),
                        "pkt": (1, 0, 30000), "abound": (1, 0, 1), "factor": (1, 0, 200), "fsp": (1, 0, 50),
                        "nst": (1, 0, 50), "crd": (1, 0, 0.8)}


@pytest.fixture(scope="module")
def cells_of():
    return {name: table_cells(load_table(name), Settings(save_dir="save_t")) for name in ALL}


def parsed(cell, argv=None):
    argv = argv or cell.commands[0]
    if cell.script == "train_student.py":
        return parse_configurations(argv, shared_student_parser())[0].options
    return parse_teacher_options(argv)


def test_the_issue_s_tables_are_there():
    assert set(ALL) <= set(available_tables())


@pytest.mark.parametrize("name", ALL)
def test_every_cell_command_parses_with_the_entry_script_s_parser(name, cells_of):
    table = load_table(name)
    cells = cells_of[name]
    assert len(cells) == len(table.rows) * len(table.columns)
    seen = set()
    for cell in cells:
        if cell.not_applicable:
            assert cell.script is None and cell.commands == []
            continue
        for argv in cell.commands:
            if tuple(argv) in seen:  # a teacher run shared by columns
                continue
            seen.add(tuple(argv))
            opt = parsed(cell, argv)
            assert opt.dataset == table.dataset and opt.resume == "auto"
        if cell.kind == "student":
            opt = parsed(cell)
            assert opt.trials == table.trials and opt.model_s == cell.row.student_for(cell.column)
            assert opt.distill == cell.row.distill


@pytest.mark.parametrize("name", ALL)
def test_cells_with_different_commands_never_share_a_run_folder(name, cells_of):
    owner = {}
    for cell in cells_of[name]:
        for argv, run_dir in zip(cell.commands * cell.trials if cell.kind == "student" else cell.commands,
                                 cell.run_dirs):
            if run_dir is None:
                continue
            key = (cell.script, tuple(argv))
            assert owner.setdefault(run_dir, key) == key, f"{cell.label} writes into {run_dir} too"


def test_repdistiller_cells_train_with_its_script_s_weights_and_recipe(cells_of):
    for cell in cells_of["repdistiller"]:
        if cell.kind != "student" or cell.not_applicable:
            continue
        opt = parsed(cell)
        assert (opt.gamma, opt.alpha, opt.beta) == pytest.approx(REPDISTILLER_WEIGHTS[opt.distill]), cell.label
        assert (opt.epochs, opt.batch_size, opt.lr_decay_epochs, opt.kd_T) == (240, 64, "150,180,210", 4)
        # RepDistiller's lr rule: 0.01 for MobileNetV2/ShuffleNets, else 0.05
        assert opt.learning_rate == (0.01 if opt.model_s in ("MobileNetV2", "ShuffleV1", "ShuffleV2") else 0.05)


def test_repdistiller_paper_numbers_and_n_a_cells_are_the_readme_s(cells_of):
    table = load_table("repdistiller")
    crd = next(r for r in table.rows if r.label == "CRD")
    pair = [c.name for c in table.columns].index("resnet32x4 -> resnet8x4")
    assert crd.paper[pair] == 75.51
    fsp = next(r for r in table.rows if r.label == "FSP")
    assert [c.name for c, v in zip(table.columns, fsp.paper) if v == NOT_APPLICABLE][:2] == [
        "wrn_40_2 -> wrn_40_1", "vgg13 -> MobileNetV2"]
    assert table.parts == ["Teacher and student of the same type", "Teacher and student of different types"]


def test_kdrefine_row_trains_the_re_parameterisable_students_with_its_lr(cells_of):
    rows = {(c.row.label, c.column.name): c for c in cells_of["kdrefine"]}
    refined = parsed(rows[("KDrefine", "resnet110 -> resnet20")])
    assert (refined.model_s, refined.blocktype, refined.learning_rate) == ("represnet20", "AMBB", 0.01)
    assert parsed(rows[("KDrefine", "wrn_40_2 -> wrn_16_2")]).model_s == "wrn_16_2"  # no rep-WRN in KDrefine
    assert parsed(rows[("KD", "resnet110 -> resnet20")]).model_s == "resnet20"


def test_modern_rows_run_each_method_with_the_recipe_its_reported_number_used(cells_of):
    rows = {(c.row.label, c.column.name): c for c in cells_of["modern"]}
    mlkd = parsed(rows[("MLKD", "resnet32x4 -> resnet8x4")])
    assert (mlkd.distill, mlkd.epochs, mlkd.learning_rate) == ("mlkd", 480, 0.025)  # the LS repository's MLKD
    assert parsed(rows[("MLKD", "resnet32x4 -> ShuffleV2")]).epochs == 960
    mlkd_ls = parsed(rows[("MLKD+LS", "resnet32x4 -> resnet8x4")])
    assert mlkd_ls.logit_stand and mlkd_ls.epochs == 480
    kd_ls = parsed(rows[("KD+LS", "resnet32x4 -> resnet8x4")])
    assert (kd_ls.distill, kd_ls.logit_stand, kd_ls.epochs) == ("kd", True, 240)
    ctkd_ls = parsed(rows[("CTKD+LS", "vgg13 -> vgg8")])
    assert (ctkd_ls.ctkd, ctkd_ls.logit_stand) == (True, True)
    assert parsed(rows[("KD+DOT", "resnet32x4 -> resnet8x4")]).optimizer == "dot"
    assert rows[("DKD", "resnet32x4 -> resnet8x4")].row.paper[0] == 76.32


def test_ickd_rows_are_the_readme_s_two_settings(cells_of):
    rows = {(c.row.label, c.column.name): c for c in cells_of["ickd"]}
    without = parsed(rows[("ICKD-C (w/o KL)", "resnet32x4 -> resnet8x4")])
    with_kl = parsed(rows[("ICKD-C", "resnet32x4 -> resnet8x4")])
    assert (without.gamma, without.alpha, without.beta) == (1.0, 0.0, 2.5)
    assert (with_kl.gamma, with_kl.alpha, with_kl.beta) == (1.0, 1.0, 2.5)


def test_checkpointkd_teachers_are_two_independent_runs_with_snapshots(cells_of):
    cells = cells_of["checkpointkd"]
    teacher = next(c for c in cells if c.kind == "teacher")
    runs = [parse_teacher_options(argv) for argv in teacher.commands]
    assert [(o.trial, o.seed, o.save_freq, o.epochs, o.nesterov) for o in runs] == [
        ("0", 0, 20, 200, True), ("1", 1, 20, 200, True)]
    rows = {c.row.label: c for c in cells if c.column.name == "wrn_40_2 -> wrn_40_1"}
    run0, run1 = teacher.run_dirs
    assert parsed(rows["Intermediate teacher"]).teacher_epochs == "100"
    assert parsed(rows["Snapshot ensemble"]).teacher_epochs == "100,200"
    assert parsed(rows["Full ensemble"]).path_t == f"{run0}/ckpt_epoch_200.pth,{run1}/ckpt_epoch_200.pth"


def test_a_shortened_schedule_scales_milestones_and_snapshots():
    cells = table_cells(load_table("checkpointkd"), Settings(save_dir="save_t", epochs=10))
    teacher = parse_teacher_options(next(c for c in cells if c.kind == "teacher").commands[0])
    assert (teacher.epochs, teacher.lr_decay_epochs, teacher.save_freq) == (10, "3,6,9", 1)
    snapshot = next(c for c in cells if c.row.label == "Snapshot ensemble")
    assert parse_configurations(snapshot.commands[0])[0].options.teacher_epochs == "5,10"


def test_published_teachers_are_used_where_fetched(tmp_path):
    save = str(tmp_path)
    path = published_teacher_path(save, "resnet56")
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    cells = table_cells(load_table("ickd"), Settings(save_dir=save))
    by = {(c.row.label, c.column.name): c for c in cells}
    fetched = by[("Teacher", "resnet56 -> resnet20")]
    assert fetched.fetched and fetched.script is None and fetched.run_dirs == [os.path.dirname(path)]
    assert parsed(by[("KD", "resnet56 -> resnet20")]).path_t == path
    trained = by[("Teacher", "resnet110 -> resnet20")]
    assert not trained.fetched and trained.script == "train_teacher.py"
    with pytest.raises(CellError, match="trains its own teachers"):
        table_cells(load_table("fashion"), Settings(teachers="fetched"))


def test_list_prints_one_command_per_cell_teachers_first():
    text = listing(table_cells(small_table(), Settings()), None)
    common = "--dataset digits --epochs 2 --lr_decay_epochs 1"
    assert text.splitlines() == [
        "# Teacher | resnet14 -> resnet8",
        f"python train_teacher.py --model resnet14 {common} --trial 0 --seed 0 --resume auto",
        "# Student | resnet14 -> resnet8",
        f"python train_teacher.py --model resnet8 {common} --trial 1 --seed 0 --data_seed 0 --resume auto",
        f"python train_teacher.py --model resnet8 {common} --trial 2 --seed 1 --data_seed 0 --resume auto",
        f"python train_teacher.py --model resnet8 {common} --trial 3 --seed 2 --data_seed 0 --resume auto",
        "# KD | resnet14 -> resnet8",
        "python train_student.py --path_t ./save/models/resnet14_digits_lr_0.05_decay_0.0005_trial_0/resnet14_last.pth"
        f" --model_t resnet14 --model_s resnet8 --distill kd {common} --trial 1 --trials 3 --resume auto"]


def test_list_marks_cells_the_paper_has_no_number_for_because_the_method_does_not_apply(cells_of):
    text = listing(cells_of["repdistiller"], None)
    assert "# FSP | wrn_40_2 -> wrn_40_1: n/a in the paper (the method does not apply), not run" in text
    assert "--distill fsp --dataset cifar100 --trial 1 --trials 5 --save_dir save_t --resume auto" in text
    assert text.count("python train_teacher.py --model wrn_40_2 ") == 1  # one teacher run for three columns


def test_table_files_are_checked_with_one_line_naming_the_entry(tmp_path):
    def broken(**change):
        data = json.load(open(load_table("quickstart").path))
        data.update(change)
        return data
    with pytest.raises(TableError, match=r"row 'KD': 'paper' needs one entry per column \(1\)"):
        parse_table(broken(rows=[{"label": "KD", "distill": "kd", "paper": [1.0, 2.0]}]), "q")
    with pytest.raises(TableError, match="unknown keys epoch"):
        parse_table(broken(epoch=3), "q")
    with pytest.raises(TableError, match="protocol must be one of last, best, best_last10"):
        parse_table(broken(protocol="median"), "q")
    with pytest.raises(TableError, match="unknown table 'cifar'; choose one of: byot, checkpointkd"):
        load_table("cifar")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TableError, match="is not valid JSON"):
        load_table(str(bad))


def test_a_cell_the_entry_script_refuses_names_its_row_and_column():
    table = small_table(rows=[{"label": "Typo", "distill": "kd", "flags": ["--kd_temperature", "4"]}])
    with pytest.raises(CellError, match=r"table 'small', row 'Typo', column resnet14 -> resnet8: the command does "
                                        r"not parse \(.*unrecognized arguments: --kd_temperature 4\)"):
        table_cells(table)
    table = small_table(rows=[{"label": "Ens", "distill": "kd", "flags": ["--path_t", "{teacher_run7}"]}])
    with pytest.raises(CellError, match=r"unknown placeholder \{teacher_run7\}"):
        table_cells(table)


def test_run_folders_named_before_the_teacher_snapshots_exist_are_the_ones_they_get(tmp_path):
    import torch
    settings = Settings(save_dir=str(tmp_path), epochs=2)
    planned = {c.label: c.run_dirs for c in table_cells(load_table("checkpointkd"), settings)}
    teacher = next(c for c in table_cells(load_table("checkpointkd"), settings) if c.kind == "teacher")
    for run_dir in teacher.run_dirs:
        os.makedirs(run_dir)
        for epoch in (1, 2):
            torch.save({"epoch": epoch}, os.path.join(run_dir, f"ckpt_epoch_{epoch}.pth"))
    actual = {c.label: c.run_dirs for c in table_cells(load_table("checkpointkd"), settings)}
    assert actual == planned
    assert os.path.basename(planned["Snapshot ensemble | wrn_40_2 -> resnet32"][0]).startswith(
        "S_resnet32_T_wrn_40_2_ep1-2_cifar100_checkpointkd_")
