"""Train a model from scratch (a teacher, or a vanilla student), RepDistiller's train_teacher.py CLI.

    python train_teacher.py --model resnet32x4
    python train_teacher.py --model resnet8 --dataset digits --epochs 30

CheckpointKD keeps teacher snapshots with ``--save_freq 20`` (``ckpt_epoch_20.pth``, ``ckpt_epoch_40.pth``, ...;
its recipe adds ``--learning_rate 0.1 --lr_decay_epochs 60,120,180 --epochs 200 --batch_size 128 --nesterov``) and
trains independent teachers side by side with ``--trials N`` (its ``--model_num N``).

``--blocktype`` builds the rep* models with that block (training-time form; fuse with convert.py) and
``--block_depth 3,7,2`` sets the blocks per stage of my* models, whose folder name then carries the depth
(``myresnet20_3-7-2_cifar100_lr_...``).
"""
from __future__ import annotations

from assembly.options import parse_teacher_options
from assembly.scratch import build_scratch_run, fit_scratch_run
from helper.run import run_cli


def main(argv=None):
    opt = parse_teacher_options(argv)
    plan = build_scratch_run(opt)
    return fit_scratch_run(plan)


if __name__ == "__main__":
    run_cli(main)
