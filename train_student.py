"""Distill a student from a teacher, RepDistiller's train_student.py CLI.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1

Loss = gamma * CE + alpha * KL_T + beta * method loss; the method is the registered Distiller named by
--distill, and its options are flags of this script (``--help`` lists them by method). Options not given take
the method's defaults (loss weights, learning rate, recipe), then the toolkit's; the run prints which came
from where. Comma-separated ``--model_s``/``--distill`` values and ``--trials N`` train side by side in one
process. The seed methods' command lines (KDrefine, ICKD-C, EMKD, BYOT, CheckpointKD) are in
docs/seed_methods.md.
"""
from __future__ import annotations

from assembly.options import parse_configurations
from assembly.student import build_student_runs, fit_student_runs
from helper.run import run_cli


def main(argv=None, data=None):
    """Run one distillation. ``data``: a prepared DataBundle (search.py passes its held-out split)."""
    configs = parse_configurations(argv)
    plan = build_student_runs(configs, data)
    return fit_student_runs(plan)


if __name__ == "__main__":
    run_cli(main)
