"""Teacher/student pairs of the zoo of different widths and resolutions, and a method built on them as
assembly.student builds it (its modules sized from one eval-mode probe forward)."""
import torch

from distiller_zoo import DistillContext, build_distiller
from engine.forward import forward, teacher_outputs
from models import build_model
from tests.methods import method_class, method_options

# pooled features 128 -> 64, 256 -> 1024, 512 -> 1280; last maps 8x8 -> 8x8, 8x8 -> 4x4, 4x4 -> 2x2
PAIRS = [("wrn_40_2", "resnet8"), ("resnet32x4", "ShuffleV2"), ("vgg13", "MobileNetV2")]
PAIR_IDS = [f"{t}-{s}" for t, s in PAIRS]


def built_pair(method, teacher_name, student_name, **options):
    """(student, eval-mode teacher, distiller) for 100 classes, seeded."""
    torch.manual_seed(0)
    student, teacher = build_model(student_name), build_model(teacher_name).eval()
    cls = method_class(method)
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        feat_s = forward(student, probe, cls.student_features).feats
        feat_t = forward(teacher, probe, cls.teacher_features).feats
    ctx = DistillContext(method_options(method, **options), student, teacher, list(feat_s), list(feat_t),
                         student_name=student_name)
    return student, teacher, build_distiller(method, ctx)


def pair_outputs(student, teacher, batch=4, kind="post", seed=1):
    """The student's outputs in train mode and the teacher's as the training loop makes them."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    student.train()
    return forward(student, x, kind), teacher_outputs(teacher, x, [kind])[kind]
