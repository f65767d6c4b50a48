"""Distill a student from a teacher, RepDistiller's train_student.py CLI.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1

Loss = gamma * CE + alpha * KL_T + beta * method loss; the method is the registered Distiller
named by --distill.
"""
from __future__ import annotations

import os
import sys

import torch

import distiller_zoo
from dataset import build_dataset
from distiller_zoo import DistillContext
from helper.loops import fit, validate
from helper.options import parse_student_options, resolve_loss_weights, student_run_name
from helper.run import place_model, setup_run, write_summary
from helper.teacher import load_teacher
from models import build_model


def build_distillation(opt, data, device):
    """Teacher, student and distiller for ``opt``; every bad combination fails here, before training."""
    if opt.distill not in distiller_zoo.REGISTRY or opt.distill == "ce":
        names = [n for n in distiller_zoo.available() if n != "ce"]
        raise ValueError(f"unknown --distill '{opt.distill}'; choose one of: {', '.join(names)}")
    cls = distiller_zoo.REGISTRY[opt.distill]
    resolve_loss_weights(opt, cls.default_weights)
    if not opt.path_t:
        raise ValueError("--path_t is required: the teacher checkpoint to distill from "
                         "(train one with train_teacher.py)")
    opt.model_t, teacher = load_teacher(opt.path_t, data.num_classes, device, opt.model_t)
    teacher = place_model(teacher, device)
    student = place_model(build_model(opt.model_s, num_classes=data.num_classes), device)
    # RepDistiller sizes the extra modules from one dummy forward of both networks in eval mode.
    probe = torch.randn(2, *data.train.images.shape[1:], device=device)
    student.eval()
    with torch.no_grad():
        feat_s, _ = student(probe, is_feat=True, preact=cls.needs_preact)
        feat_t, _ = teacher(probe, is_feat=True, preact=cls.needs_preact)
    ctx = DistillContext(opt, student, teacher, list(feat_s), list(feat_t), train_targets=data.train.targets,
                         num_classes=data.num_classes, device=device)
    distiller = cls(ctx).to(device)
    return teacher, student, distiller


def main(argv=None):
    opt = parse_student_options(argv)
    device = setup_run(opt)
    data = build_dataset(opt.dataset, opt.data_root, device)
    teacher, student, distiller = build_distillation(opt, data, device)
    run_dir = os.path.join(opt.save_dir, "student_model", student_run_name(opt))
    teacher_eval = validate(teacher, data.test, opt, device)
    print(f"teacher {opt.model_t}: test acc {teacher_eval['acc']:.2f} (top5 {teacher_eval['acc_top5']:.2f})",
          flush=True)
    print(f"distilling {opt.model_t} -> {opt.model_s} with '{opt.distill}' (r={opt.gamma}, a={opt.alpha}, "
          f"b={opt.beta}) on {device}; output: {run_dir}", flush=True)
    result = fit(opt, data, student, distiller, run_dir, opt.model_s, device, teacher=teacher)
    write_summary(run_dir, opt, teacher_acc=teacher_eval["acc"], **result)
    print(f"done: last test acc {result.get('last_acc', float('nan')):.2f}, best {result['best_acc']:.2f}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
