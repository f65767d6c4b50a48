"""A three-stage network with RepDistiller's feature contract, and helpers for driving two-stage methods."""
import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import PRE, Batch, DistillContext, Outputs
from tests.methods import method_options


class TinyNet(nn.Module):
    """Three conv stages (8x8 -> 4x4 -> 2x2 on 8x8 inputs) + pooled vector, RepDistiller's feature contract."""

    def __init__(self, widths=(4, 8, 16), num_classes=5):
        super().__init__()
        w0, w1, w2 = widths
        self.conv1 = nn.Conv2d(3, w0, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(w0)
        self.layer1 = nn.Conv2d(w0, w1, 3, stride=2, padding=1)
        self.layer2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.fc = nn.Linear(w2, num_classes)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2])

    def forward(self, x, is_feat=False, preact=False):
        p0 = self.bn1(self.conv1(x))
        f0 = F.relu(p0)
        p1 = self.layer1(f0)
        f1 = F.relu(p1)
        p2 = self.layer2(f1)
        f2 = F.relu(p2)
        pooled = f2.mean(dim=(2, 3))
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        return ([p0, p1, p2, pooled] if preact else [f0, f1, f2, pooled]), logits


def make_ctx(method, student, teacher, n_data=40, num_classes=5, student_name="tiny", **overrides):
    """The context ``method`` is built from: its typed options (declared defaults, ``kd_T`` 4, ``overrides``)."""
    options = method_options(method, **{"kd_T": 4, **overrides})
    x = torch.randn(2, 3, 8, 8)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        feat_s, _ = student(x, is_feat=True)
        feat_t, _ = teacher(x, is_feat=True)
    targets = torch.arange(n_data) % num_classes
    return DistillContext(options=options, student=student, teacher=teacher, feat_s=feat_s, feat_t=feat_t,
                          train_targets=targets, num_classes=num_classes, student_name=student_name)


def forward_pair(student, teacher, x, preact):
    feat_s, logit_s = student(x, is_feat=True, preact=preact)
    with torch.no_grad():
        feat_t, logit_t = teacher(x, is_feat=True, preact=preact)
    return Outputs(logit_s, feat_s), Outputs(logit_t, [f.detach() for f in feat_t])


def snapshot(*modules):
    return {(i, n): p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def changed(before, *modules):
    out = set()
    for i, m in enumerate(modules):
        for n, p in m.named_parameters():
            if not torch.equal(before[(i, n)], p.detach()):
                out.add((i, n))
    return out


def run_init_stage(d, student, teacher, steps=3):
    params = list(itertools.chain.from_iterable(m.parameters() for m in d.init_modules(student)))
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    x = torch.randn(6, 3, 8, 8)
    for _ in range(steps):
        out_s, out_t = forward_pair(student, teacher, x, d.student_features == PRE)
        loss = d.init_loss(out_s, out_t, Batch(x, torch.zeros(6, dtype=torch.long), torch.arange(6)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def decreases(loss_fn, params, steps=40, lr=0.05):
    opt = torch.optim.Adam(params, lr=lr)
    values = []
    for _ in range(steps):
        loss = loss_fn()
        values.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < values[0], values
    return values
