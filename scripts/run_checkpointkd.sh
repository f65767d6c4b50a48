#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# CheckpointKD (LeapLabTHU/CheckpointKD, NeurIPS 2022) on CIFAR-100, the README's two experiments:
#   1. "Full Teacher vs. Intermediate Teacher" (its --teacher_num 1): distil from the last snapshot of a teacher
#      run, and from an intermediate one;
#   2. "Full Ensemble vs. Snapshot Ensemble" (its --teacher_num 2): distil from the logit average of two
#      independently trained teachers' last snapshots, and from that of two snapshots of one run.
# Teachers wrn_40_2 and resnet110, students wrn_40_1, resnet32 and mobilenetv2_075 (every pair by default).
#
#   bash scripts/run_checkpointkd.sh                          # teachers (if missing), then all student runs
#   PAIRS="resnet110:resnet32" bash scripts/run_checkpointkd.sh
#   INTER=auto bash scripts/run_checkpointkd.sh               # intermediate epoch from scripts/select_teacher.py
#   REFERENCE_BN=1 bash scripts/run_checkpointkd.sh           # teachers' BN in train mode, as the reference
#   bash scripts/run_checkpointkd.sh --seed 1                 # extra arguments go to every student run
#   DATA_ROOT=/data SAVE_DIR=./save DEVICE=cuda bash scripts/run_checkpointkd.sh   # for every run
#
# Reference recipe (CheckpointKD's defaults): SGD lr 0.1, momentum 0.9, Nesterov, wd 5e-4, batch 128, 200 epochs,
# lr x0.1 every 60 epochs; teachers keep a snapshot every 20 epochs (--save_epoch_teacher --epo 20 there,
# --save_freq 20 here); students: --distill checkpointkd = loss 0.5 * CE + 0.5 * T^2 * KL with T = 5
# (the same as --distill kd -r 0.5 -a 0.5 -b 0 --kd_T 5 plus the recipe flags). Its teachers are the two
# trials 0 and 1 of train_teacher.py. The reference reports the best test accuracy over the last 10 epochs
# (summary.json: best_acc_last10).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"
PAIRS="${PAIRS:-wrn_40_2:wrn_40_1 wrn_40_2:resnet32 wrn_40_2:mobilenetv2_075 resnet110:wrn_40_1 resnet110:resnet32 resnet110:mobilenetv2_075}"
T_EPOCHS="${T_EPOCHS:-200}"          # teacher epochs; the last snapshot is the "full" teacher
SAVE_FREQ="${SAVE_FREQ:-20}"         # snapshot period
INTER="${INTER:-100}"                # intermediate teacher epoch, or "auto"
SNAPSHOTS="${SNAPSHOTS:-100,200}"    # snapshot-ensemble epochs of one run
DATA_ROOT="${DATA_ROOT:-./data}"
SAVE_DIR="${SAVE_DIR:-./save}"
DEVICE="${DEVICE:-auto}"
COMMON=(--dataset cifar100 --data_root "$DATA_ROOT" --save_dir "$SAVE_DIR" --device "$DEVICE")
TEACHER_ARGS=(--epochs "$T_EPOCHS" --learning_rate 0.1 --lr_decay_epochs 60,120,180 --batch_size 128
              --nesterov --save_freq "$SAVE_FREQ")
BN_ARGS=()
if [ "${REFERENCE_BN:-0}" = "1" ]; then BN_ARGS=(--teacher_bn train); fi

run_dir() { echo "$SAVE_DIR/models/${1}_cifar100_lr_0.1_decay_0.0005_trial_${2}"; }

# Teachers: two independent runs per architecture (seeds 0 and 1: the same seed would train the same network
# twice), snapshots every SAVE_FREQ epochs.
for T in $(for p in $PAIRS; do echo "${p%%:*}"; done | sort -u); do
  for trial in 0 1; do
    RUN="$(run_dir "$T" "$trial")"
    if [ ! -f "$RUN/ckpt_epoch_${T_EPOCHS}.pth" ]; then
      # an interrupted teacher run continues; one without a checkpoint yet starts from epoch 1
      "$PY" train_teacher.py --model "$T" --trial "$trial" --seed "$trial" "${TEACHER_ARGS[@]}" "${COMMON[@]}" --resume auto
    fi
  done
done

for pair in $PAIRS; do
  T="${pair%%:*}"; S="${pair##*:}"
  RUN0="$(run_dir "$T" 0)"; RUN1="$(run_dir "$T" 1)"
  E_INTER="$INTER"
  if [ "$INTER" = "auto" ]; then
    E_INTER="$("$PY" scripts/select_teacher.py --run_dir "$RUN0" --model "$T" --kd_T 5 \
               --data_root "$DATA_ROOT" --device "$DEVICE" |
               sed -n 's/^recommended teacher: epoch \([0-9]*\).*/\1/p')"
  fi
  # 1. full teacher vs intermediate teacher
  "$PY" train_student.py --distill checkpointkd --model_s "$S" --path_t "$RUN0" --teacher_epochs "$T_EPOCHS" \
      "${BN_ARGS[@]}" "${COMMON[@]}" --trial full "$@"
  "$PY" train_student.py --distill checkpointkd --model_s "$S" --path_t "$RUN0" --teacher_epochs "$E_INTER" \
      "${BN_ARGS[@]}" "${COMMON[@]}" --trial inter "$@"
  # 2. full ensemble (two independent runs) vs snapshot ensemble (two snapshots of one run)
  "$PY" train_student.py --distill checkpointkd --model_s "$S" \
      --path_t "$RUN0/ckpt_epoch_${T_EPOCHS}.pth,$RUN1/ckpt_epoch_${T_EPOCHS}.pth" \
      "${BN_ARGS[@]}" "${COMMON[@]}" --trial full_ensemble "$@"
  "$PY" train_student.py --distill checkpointkd --model_s "$S" --path_t "$RUN0" --teacher_epochs "$SNAPSHOTS" \
      "${BN_ARGS[@]}" "${COMMON[@]}" --trial snapshot_ensemble "$@"
done
