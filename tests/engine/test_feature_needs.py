"""A method declares what it reads from the student and from the teacher independently, and one teacher forward
serves every run's need."""
import torch

from distiller_zoo import POST, PRE
from distiller_zoo.base import Distiller
from engine.forward import network_outputs, teacher_outputs
from engine.step import StudentRun, StudentStep, step_runs
from engine.teacher import Teacher
from helper.types import Batch
from models import build_model
from assembly.options import parse_student_options


class Recorder(Distiller):
    """Keeps the feature lists it was given (a student/teacher pair like ReviewKD's or OFD's needs)."""

    options = ()
    student_features, teacher_features = POST, PRE

    def __init__(self):
        torch.nn.Module.__init__(self)
        self.seen = []

    def loss(self, out_s, out_t, batch, epoch):
        self.seen.append((out_s.feats, out_t.feats))
        return {"ce": torch.nn.functional.cross_entropy(out_s.logits, batch.y)}


def test_student_post_and_teacher_pre_lists_reach_the_method():
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", num_classes=10), build_model("resnet8", num_classes=10).eval()
    method = Recorder()
    opt = parse_student_options(["--epochs", "1", "--device", "cpu"])
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    run = StudentRun(opt, student, method, optimizer=optimizer, step=StudentStep(student, method))
    x = torch.randn(4, 3, 32, 32)
    batch = Batch(x, torch.arange(4) % 10, torch.arange(4))
    step_runs(batch, 1, [run], [{"ce": 1.0}], opt, torch.device("cpu"), Teacher.of(teacher))
    [(feats_s, feats_t)] = method.seen
    with torch.no_grad():
        want_t, _ = teacher(x, is_feat=True, preact=True)
        student.eval()
    assert torch.equal(feats_t[2], want_t[2])
    # the student's maps are post-ReLU (non-negative), the teacher's pre-ReLU ones keep negative values
    assert all((f >= 0).all() for f in feats_s[1:-1]) and any((f < 0).any() for f in feats_t[1:-1])


def test_one_teacher_forward_serves_post_and_pre_needs():
    torch.manual_seed(0)
    teacher = Teacher.of(build_model("resnet8", num_classes=10).eval())
    calls = []
    handle = teacher.members[0].conv1.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    outs = teacher_outputs(teacher, x, {None, POST, PRE})
    handle.remove()
    assert len(calls) == 1
    post, _ = teacher.members[0](x, is_feat=True)
    pre, _ = teacher.members[0](x, is_feat=True, preact=True)
    assert torch.equal(outs[POST].feats[2], post[2]) and torch.equal(outs[PRE].feats[2], pre[2])
    assert outs[None].feats is None and torch.equal(outs[None].logits, outs[POST].logits)


def test_a_single_list_uses_the_repdistiller_call():
    model = build_model("resnet8", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    [(kind, out)] = network_outputs(model, x, [PRE]).items()
    ref, logits = model(x, is_feat=True, preact=True)
    assert kind == PRE and torch.equal(out.logits, logits) and len(out.feats) == len(ref)
