"""Train a model from scratch (a teacher, or a vanilla student), RepDistiller's train_teacher.py CLI.

    python train_teacher.py --model resnet32x4
    python train_teacher.py --model resnet8 --dataset digits --epochs 30
"""
from __future__ import annotations

import sys

from dataset import build_dataset
from distiller_zoo import DistillContext, build_distiller
from helper.loops import fit
from helper.options import parse_teacher_options
from helper.run import place_model, setup_run, write_summary
from models import build_model


def main(argv=None):
    opt = parse_teacher_options(argv)
    device = setup_run(opt)
    data = build_dataset(opt.dataset, opt.data_root, device)
    model = place_model(build_model(opt.model, num_classes=data.num_classes), device)
    opt.gamma, opt.alpha, opt.beta = 1.0, 0.0, 0.0
    distiller = build_distiller("ce", DistillContext(opt, model, None, num_classes=data.num_classes,
                                                     device=device)).to(device)
    print(f"training {opt.model} on {opt.dataset} ({len(data.train)} train / {len(data.test)} test images) "
          f"on {device}; output: {opt.save_folder}", flush=True)
    result = fit(opt, data, model, distiller, opt.save_folder, opt.model, device)
    write_summary(opt.save_folder, opt, **result)
    print(f"done: last test acc {result.get('last_acc', float('nan')):.2f}, best {result['best_acc']:.2f}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
