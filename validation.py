"""Evaluate a checkpoint on the test split: top-1 / top-5.

    python validation.py --model resnet32x4 --model_path save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
    python validation.py --model represnet20 --model_path save/student_model/represnet20_deploy.pth \
        --blocktype AMBB --deploy_flag True

Re-parameterisable models (represnet*, repvgg8, repmobilenetv2) are built with ``--blocktype`` and in the
form ``--deploy_flag`` names: True for a file written by convert.py, False for a training checkpoint. Left
out, the form is read from the checkpoint's keys (KDrefine defaulted to True). ``my*`` models take
``--block_depth``.

Multi-exit models (BYOT's ``multi_resnet18_kd``/``multi_resnet50_kd``) report every classifier and the
ensemble of all (mean of their softmax outputs); the top-1 line is the deepest classifier:

    python validation.py --model multi_resnet18_kd \
        --model_path save/student_model/S_multi_resnet18_kd_T_self_.../multi_resnet18_kd_best.pth

A checkpoint written by this toolkit stores its options: ``--dataset``, ``--block_depth`` and ``--data_norm``
default to the values it was trained with (``byot`` normalisation for BYOT runs), else to cifar100, the nominal
depth and the data set's own normalisation. A file trained with the BYOT reference code needs
``--data_norm byot`` and loads without its unused ``downsample*_1`` modules.
"""
from __future__ import annotations

from assembly.evaluate import evaluate_checkpoint, parser
from helper.run import run_cli


def main(argv=None):
    return evaluate_checkpoint(parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
