#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# BYOT self-distillation (luanyunteng/pytorch-be-your-own-teacher) on CIFAR-100: multi-exit ResNet18 and ResNet50.
# --distill byot brings the reference recipe (200 epochs, lr 0.1 x0.1 after 75/130/180, batch 128, T 3,
# -r 0.9 -a 0.1 -b 1e-6, BYOT's normalisation constants); no teacher. The reference reports all four classifiers
# at the epoch where classifier 4/4 is best (printed at the end and in summary.json: best_exits).
#   bash scripts/run_byot.sh               # both models
#   bash scripts/run_byot.sh --epochs 1    # extra arguments go to every run
#   bash scripts/run_byot.sh --warm-up     # BYOT's --warm-up: lr 0.01 in the first epoch, then the recipe's schedule
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"

"$PY" train_student.py --distill byot --model_s multi_resnet18_kd --trial 1 "$@"
"$PY" train_student.py --distill byot --model_s multi_resnet50_kd --trial 1 "$@"
# evaluate a run (all four classifiers and their ensemble):
#   python validation.py --model multi_resnet18_kd \
#       --model_path save/student_model/S_multi_resnet18_kd_T_self_cifar100_byot_r_0.9_a_0.1_b_1e-06_1/multi_resnet18_kd_best.pth
