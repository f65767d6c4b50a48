"""Train a model from scratch (a teacher, or a vanilla student), RepDistiller's train_teacher.py CLI.

    python train_teacher.py --model resnet32x4
    python train_teacher.py --model resnet8 --dataset digits --epochs 30

CheckpointKD keeps teacher snapshots with ``--save_freq 20`` (``ckpt_epoch_20.pth``, ``ckpt_epoch_40.pth``, ...;
its recipe adds ``--learning_rate 0.1 --lr_decay_epochs 60,120,180 --epochs 200 --batch_size 128 --nesterov``).

``--blocktype`` builds the rep* models with that block (training-time form; fuse with convert.py) and
``--block_depth 3,7,2`` sets the blocks per stage of my* models, whose folder name then carries the depth
(``myresnet20_3-7-2_cifar100_lr_...``).
"""
from __future__ import annotations

import os

from dataset import build_dataset
from distiller_zoo import DistillContext, build_distiller
from helper.loops import fit
from helper.options import parse_teacher_options
from helper.recipe import set_normalization
from helper.run import (announce, describe_processes, finish_processes, is_main_process, place_model, run_cli,
                        setup_run, write_summary)
from helper.run_folder import ALREADY_FINISHED
from models import build_model
from models.ambb import normalize_block_type
from train_student import check_block_depth_applies, parse_block_depth_arg


def main(argv=None):
    opt = parse_teacher_options(argv)
    device = setup_run(opt)
    data = build_dataset(opt.dataset, opt.data_root, device)
    set_normalization(data, opt.data_norm)
    opt.blocktype = normalize_block_type(opt.blocktype)
    opt.block_depth = parse_block_depth_arg(opt.block_depth)
    check_block_depth_applies(opt.model, opt.block_depth)
    model = build_model(opt.model, num_classes=data.num_classes, block_type=opt.blocktype, deploy=False,
                        block_depth=opt.block_depth)
    depth = getattr(model, "block_depth", None)
    if depth is not None:
        opt.model_name = opt.model_name.replace(opt.model, f"{opt.model}_{'-'.join(str(d) for d in depth)}", 1)
        opt.save_folder = os.path.join(opt.save_dir, "models", opt.model_name)
    model = place_model(model, device, opt)
    opt.gamma, opt.alpha, opt.beta = 1.0, 0.0, 0.0
    distiller = build_distiller("ce", DistillContext(opt, model, None, num_classes=data.num_classes,
                                                     device=device)).to(device)
    announce(f"training {opt.model} on {opt.dataset} ({len(data.train)} train / {len(data.test)} test images) "
             f"on {device}{describe_processes()}; output: {opt.save_folder}")
    result = fit(opt, data, model, distiller, opt.save_folder, opt.model, device)
    if ALREADY_FINISHED in result:  # fit said so; its summary.json stays as that run wrote it
        finish_processes()
        return result
    if is_main_process():
        write_summary(opt.save_folder, opt, **result)
    announce(f"done: last test acc {result.get('last_acc', float('nan')):.2f}, best {result['best_acc']:.2f}")
    finish_processes()
    return result


if __name__ == "__main__":
    run_cli(main)
