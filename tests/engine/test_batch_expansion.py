"""A method's batch expansion (Distiller.batch_expansion; SSKD's four rotations): both networks run on the expanded
rows, the training accuracy counts the batch's own images, and side-by-side runs and trials stay as they would alone."""
import copy

import torch

import distiller_zoo
from distiller_zoo import DistillContext
from distiller_zoo.SSKD import ROTATIONS
from engine.fit import build_optimizer
from engine.forward import forward
from engine.step import StudentRun, StudentStep, loss_weights, step_runs
from engine.teacher import Teacher
from models import build_model

from .test_host_syncs import CPU, batch_of, options, tiny_set
from .test_teacher_in_loop import student_run


def rows_seen(model):
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


def test_an_expanding_method_next_to_a_plain_one_trains_each_as_it_would_alone():
    opt = options()
    data = tiny_set(40)
    kd, teacher = student_run("kd", opt, data)
    sskd, _ = student_run("sskd", opt, data)
    kd_alone, sskd_alone = copy.deepcopy(kd), copy.deepcopy(sskd)
    batch = batch_of(data, 0)
    weights = loss_weights(opt)
    inputs_t, inputs_s = rows_seen(teacher), rows_seen(sskd.student)
    _, [(loss_kd, _, logits_kd), (loss_sskd, terms, logits_sskd)] = step_runs(
        batch, 1, [kd, sskd], [weights, weights], opt, CPU, teacher)
    # one teacher forward per input: the batch (kd) and its rotations (sskd); the student of sskd saw the rotations
    assert [x.shape[0] for x in inputs_t] == [4, 16]
    assert torch.equal(inputs_t[1], ROTATIONS.expand(batch.x)) and torch.equal(inputs_s[0], inputs_t[1])
    # the logits the epoch's accuracy counts are those of the batch's own (upright) images
    assert logits_kd.shape == logits_sskd.shape == (4, 10)
    assert terms["kd"] > 0
    _, [(alone_kd, _, _)] = step_runs(batch, 1, [kd_alone], [weights], opt, CPU, teacher)
    _, [(alone_sskd, _, _)] = step_runs(batch, 1, [sskd_alone], [weights], opt, CPU, teacher)
    assert torch.equal(loss_kd, alone_kd) and torch.equal(loss_sskd, alone_sskd)
    for together, alone in ((kd, kd_alone), (sskd, sskd_alone)):
        for (name, p), q in zip(together.student.named_parameters(), alone.student.parameters()):
            assert torch.equal(p, q), name
        for (name, p), q in zip(together.distiller.state_dict().items(), alone.distiller.state_dict().values()):
            assert torch.equal(p, q), name


def test_trials_of_an_expanding_method_share_one_teacher_forward_of_the_expanded_rows():
    opt = options()
    data = tiny_set(40)
    first, teacher = student_run("sskd", opt, data)
    second, _ = student_run("sskd", opt, data)
    inputs_t = rows_seen(teacher)
    step_runs(batch_of(data, 0), 1, [first, second], [loss_weights(opt)] * 2, opt, CPU, teacher)
    assert [x.shape[0] for x in inputs_t] == [16]


def tapped_teacher_run(method, opt, data, teacher):
    """A run of ``method`` with a seeded resnet8 student next to ``teacher`` (catkd reads a wrn's pooled map
    through a forward hook on its head ReLU)."""
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10)
    cls = distiller_zoo.REGISTRY[method]
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        feat_s, feat_t = forward(student, probe, "post").feats, forward(teacher, probe, "post").feats
    ctx = DistillContext(cls.select_options(opt), student, teacher, list(feat_s), list(feat_t),
                         train_targets=data.targets, num_classes=10)
    distiller = cls(ctx)
    run = StudentRun(opt, student, distiller, optimizer=build_optimizer(student, distiller, opt, CPU),
                     step=StudentStep(student, distiller))
    return run


def test_a_method_that_hooks_the_teacher_reads_the_forward_of_its_own_input_next_to_an_expanding_one():
    # the teacher runs once per input; a hook on it holds the latest forward, so each run steps right after its own
    opt = options()
    data = tiny_set(40)
    network = build_model("wrn_16_1", num_classes=10).eval()
    teacher = Teacher.of(network)
    catkd, sskd = (tapped_teacher_run(m, opt, data, network) for m in ("catkd", "sskd"))
    alone = tapped_teacher_run("catkd", opt, data, network)  # the same weights (its own hook on the teacher)
    batch = batch_of(data, 0)
    weights = loss_weights(opt)
    _, [(loss, terms, _), _] = step_runs(batch, 1, [catkd, sskd], [weights, weights], opt, CPU, teacher)
    _, [(loss_alone, terms_alone, _)] = step_runs(batch, 1, [alone], [weights], opt, CPU, teacher)
    assert terms["kd"] > 0 and torch.equal(terms["kd"], terms_alone["kd"]) and torch.equal(loss, loss_alone)


def test_a_method_that_hooks_the_teacher_reads_its_own_input_next_to_one_reading_the_strong_view():
    # MLKD's teacher forward of the strong view comes after the runs that read the batch alone have stepped
    opt = options()
    data = tiny_set(40)
    network = build_model("wrn_16_1", num_classes=10).eval()
    teacher = Teacher.of(network)
    catkd, mlkd, alone = (tapped_teacher_run(m, opt, data, network) for m in ("catkd", "mlkd", "catkd"))
    batch = batch_of(data, 0, strong_view=True)
    weights = loss_weights(opt)
    _, [(loss, terms, _), _] = step_runs(batch, 1, [catkd, mlkd], [weights, weights], opt, CPU, teacher)
    _, [(loss_alone, terms_alone, _)] = step_runs(batch, 1, [alone], [weights], opt, CPU, teacher)
    assert terms["kd"] > 0 and torch.equal(terms["kd"], terms_alone["kd"]) and torch.equal(loss, loss_alone)
