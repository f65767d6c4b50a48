"""CheckpointKD (Wang et al., NeurIPS 2022; LeapLabTHU/CheckpointKD): KD from intermediate checkpoints.

The method itself is the teacher: one snapshot of a teacher run, or the logit average of several
(``--path_t`` with several files, or ``--path_t RUN_DIR --teacher_epochs 60,120``; see
``engine/teacher.py``). Any ``--distill`` method can use such a teacher. ``--distill checkpointkd`` is
plain KD with the reference's loss and recipe as defaults:

    L = alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),  alpha 0.5, T 5

with the KL summed over classes and averaged over the batch (``reduction='batchmean'``), which is exactly
RepDistiller's KL term (sum / B * T^2). So it equals ``--distill kd -r 0.5 -a 0.5 -b 0 --kd_T 5``; the
reference's ``--alpha A`` is ``-r A -a (1 - A)`` here and its ``--T`` is ``--kd_T``. ``--teacher_scale``
switches the KL term to the reference's ``teacher_scale`` form, ``T * KL(softmax(z_t / T) || softmax(z_s))``.

Recipe (options not given on the command line): 200 epochs, lr 0.1 with Nesterov momentum, x0.1 every 60
epochs (its StepLR(60) stepped at 0-indexed epoch e gives 0.1 for e < 60; toolkit epoch e+1, so decay after
60/120/180 here), batch 128, T 5. Teacher BatchNorm stays in eval mode unless ``--teacher_bn train``.
"""
from .KD import KD
from .base import register


@register("checkpointkd")
class CheckpointKD(KD):
    defaults = {"gamma": 0.5, "alpha": 0.5, "beta": 0.0,
                "epochs": 200, "learning_rate": 0.1, "lr_decay_epochs": "60,120,180", "lr_decay_rate": 0.1,
                "batch_size": 128, "kd_T": 5.0, "nesterov": True}
