"""scripts/run_cifar_distill.sh's lines for ReviewKD, OFD, SimKD and SemCKD (#13): the authors' settings."""
from assembly.options import parse_student_options, student_parser

from .test_scripts import fetched_teacher, recorded_calls


def test_the_feature_method_lines_carry_their_references_settings(tmp_path):
    fetched_teacher(tmp_path / "save")
    proc, calls = recorded_calls(tmp_path, "run_cifar_distill.sh", SAVE_DIR=str(tmp_path / "save"))
    assert proc.returncode == 0, proc.stderr
    lines = {}
    for args in calls:
        opt = parse_student_options(args[1:])
        if opt.distill in ("reviewkd", "ofd", "simkd", "semckd"):
            given = student_parser().parse_args(args[1:])
            lines.setdefault(opt.distill, []).append(((given.gamma, given.alpha, given.beta), opt))
    assert sorted(lines) == ["ofd", "reviewkd", "semckd", "simkd"] and all(len(v) == 1 for v in lines.values())
    # ReviewKD's -b depends on the pair: the line leaves the weights to the method's presets
    assert lines["reviewkd"][0][0] == (None, None, None)
    (ofd_weights, ofd), = lines["ofd"]
    assert ofd_weights == (1.0, 0.0, 0.001) and ofd.teacher_bn == "train_always"
    (simkd_weights, simkd), = lines["simkd"]
    assert simkd_weights == (0.0, 0.0, 1.0) and simkd.factor == 2
    (semckd_weights, semckd), = lines["semckd"]
    assert semckd_weights == (1.0, 1.0, 400.0) and semckd.soft == 1.0 and semckd.kd_T == 4
