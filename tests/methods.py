"""Shared by the method tests: a student, a teacher and a method built as train_student.py builds them."""
from types import SimpleNamespace

import torch

from distiller_zoo import DistillContext, build_distiller
from models import build_model


def built_method(method, student="resnet8", teacher="resnet8", num_classes=10, opt=None):
    """(student, eval-mode teacher, distiller), seeded, the method's modules sized from a dummy forward."""
    torch.manual_seed(0)
    s = build_model(student, num_classes=num_classes)
    t = build_model(teacher, num_classes=num_classes).eval()
    probe = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat_s = list(s(probe, is_feat=True)[0])
        feat_t = list(t(probe, is_feat=True)[0])
    ctx = DistillContext(opt or SimpleNamespace(kd_T=4), s, t, feat_s, feat_t, num_classes=num_classes)
    return s, t, build_distiller(method, ctx)
