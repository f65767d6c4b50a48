"""Method options and distiller contexts built from real student/teacher models."""
import dataclasses

import torch

from distiller_zoo import DistillContext
from tests.methods import options_among

# one set of values for the methods built here; each takes the options it declares
SHARED_VALUES = dict(kd_T=4.0, logit_multiplier=2.0, logit_eps=1e-7, mc_weight=0.001, B1_weight=1.0, B2_weight=1.0,
                     B3_weight=1.0, B4_weight=1.0, hint_layer=2, feat_dim=16)


def model_options(method, **overrides):
    """``method``'s typed options from SHARED_VALUES and ``overrides`` (a name or a Distiller class)."""
    return options_among(method, **{**SHARED_VALUES, **overrides})


def model_ctx(options, student, teacher, preact=False):
    """A context holding ``options`` and the features of one eval-mode probe forward of both networks."""
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        fs, _ = student(probe, is_feat=True, preact=preact)
        ft, _ = teacher(probe, is_feat=True, preact=preact)
    return DistillContext(options, student, teacher, list(fs), list(ft), num_classes=100)


def with_options(ctx, options):
    """The same networks and features for another method (milestone checking next to the method it wraps)."""
    return dataclasses.replace(ctx, options=options)
