#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# RepDistiller's CIFAR-100 distillation lines (by default teacher resnet32x4, student resnet8x4), plus ICKD-C and DKD.
#   bash scripts/run_cifar_distill.sh                               # resnet32x4 -> resnet8x4
#   bash scripts/run_cifar_distill.sh wrn_40_2 wrn_16_2 --trials 5  # another pair; extra flags go to every run
#   bash scripts/run_cifar_distill.sh --epochs 1 --init_epochs 1    # a smoke run of every method
# The teacher checkpoint is, in this order: $TEACHER; save/models/<teacher>_vanilla/ckpt_epoch_240.pth (RepDistiller's
# published teachers: bash scripts/fetch_pretrained_teachers.sh); the finished run of bash scripts/run_cifar_vanilla.sh
# (save/models/<teacher>_cifar100_lr_..._trial_0/<teacher>_last.pth). SAVE_DIR (default ./save) is where both look.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"
TA=resnet32x4
S=resnet8x4
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then TA="$1"; shift; fi
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then S="$1"; shift; fi
SAVE_DIR="${SAVE_DIR:-./save}"

find_teacher() {
  if [ -n "${TEACHER:-}" ]; then echo "$TEACHER"; return; fi
  local fetched="$SAVE_DIR/models/${TA}_vanilla/ckpt_epoch_240.pth"
  if [ -f "$fetched" ]; then echo "$fetched"; return; fi
  local run
  for run in "$SAVE_DIR"/models/"${TA}"_cifar100_lr_*_trial_0; do
    # summary.json is written when the teacher run has finished
    if [ -f "$run/summary.json" ] && [ -f "$run/${TA}_last.pth" ]; then echo "$run/${TA}_last.pth"; return; fi
  done
  echo "error: no teacher checkpoint for '$TA' under $SAVE_DIR/models: fetch RepDistiller's" \
       "(bash scripts/fetch_pretrained_teachers.sh), train it (bash scripts/run_cifar_vanilla.sh), or set TEACHER=FILE" >&2
  exit 1
}
T="$(find_teacher)"
echo "teacher $TA: $T; student $S" >&2

# KD
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill kd --model_s "$S" -r 0.1 -a 0.9 -b 0 --trial 1 "$@"
# KD+DOT (mdistiller's CIFAR recipe: KD's CE 0.1 / KD 0.9 / T 4 with the two-momentum optimizer, delta 0.075)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill kd --model_s "$S" -r 0.1 -a 0.9 -b 0 --optimizer dot --dot_delta 0.075 --trial 1 "$@"
# FitNet
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill hint --model_s "$S" -a 0 -b 100 --trial 1 "$@"
# AT
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill attention --model_s "$S" -a 0 -b 1000 --trial 1 "$@"
# SP
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill similarity --model_s "$S" -a 0 -b 3000 --trial 1 "$@"
# CC
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill correlation --model_s "$S" -a 0 -b 0.02 --trial 1 "$@"
# VID
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill vid --model_s "$S" -a 0 -b 1 --trial 1 "$@"
# RKD
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill rkd --model_s "$S" -a 0 -b 1 --trial 1 "$@"
# PKT
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill pkt --model_s "$S" -a 0 -b 30000 --trial 1 "$@"
# AB
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill abound --model_s "$S" -a 0 -b 1 --trial 1 "$@"
# FT
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill factor --model_s "$S" -a 0 -b 200 --trial 1 "$@"
# FSP
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill fsp --model_s "$S" -a 0 -b 50 --trial 1 "$@"
# NST
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill nst --model_s "$S" -a 0 -b 50 --trial 1 "$@"
# CRD
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill crd --model_s "$S" -a 0 -b 0.8 --trial 1 "$@"
# CRD+KD
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill crd --model_s "$S" -a 1 -b 0.8 --trial 1 "$@"
# ICKD-C without and with KL (ICKD's README)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill ickd --model_s "$S" -a 0 -b 2.5 --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill ickd --model_s "$S" -a 1 -b 2.5 --trial 1 "$@"
# DKD (mdistiller's CIFAR recipe: CE 1, alpha 1, T 4, 20-epoch warm-up; beta 8, or its config's 2 or 6 for the
# pairs that have one, e.g. resnet56 -> resnet20: the per-pair preset)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill dkd --model_s "$S" -r 1 -a 0 -b 1 --dkd_alpha 1 --trial 1 "$@"
# DIST (its CIFAR recipe: CE 1, DIST 2, tau 4, inter/intra weights 1)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill dist --model_s "$S" -r 1 -a 0 -b 2 --dist_tau 4 --trial 1 "$@"
# NKD (the reference's ImageNet T 1, gamma 1.5; it has no CIFAR settings)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill nkd --model_s "$S" -r 1 -a 0 -b 1 --nkd_T 1 --nkd_gamma 1.5 --trial 1 "$@"
# TTM and WTTM (the reference README's vgg13 -> vgg8 gamma 0.1, beta 45; per-pair values not found in the reference)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill ttm --model_s "$S" -r 1 -a 0 -b 45 --ttm_l 0.1 --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill wttm --model_s "$S" -r 1 -a 0 -b 45 --ttm_l 0.1 --trial 1 "$@"
# KD+LS and DKD+LS (logit standardization: the LS repository's per-pair temperature and weights are the defaults)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill kd --logit_stand --model_s "$S" --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill dkd --logit_stand --model_s "$S" --trial 1 "$@"
# CAT-KD (CE 1 and the CAT-KD CIFAR-100 configs' per-pair -b, --cat_resolution and --cat_normalize, which are its presets)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill catkd --model_s "$S" --trial 1 "$@"
# SRD (torchdistill's official ImageNet settings: CE 1, SRD 1, exponent 4, its KL at tau 1; no CIFAR settings found)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill srd --model_s "$S" -r 1 -a 0 -b 1 --srd_exponent 4 --srd_T 1 --trial 1 "$@"
# SSKD (the original CIFAR recipe: CE 0.1 and KL 0.9 on the upright images, 2.7 tf + 10 ss terms as -b; the teacher's head trained first for --init_epochs 60)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill sskd --model_s "$S" -r 0.1 -a 0.9 -b 1 --trial 1 "$@"
# PAD-L2 (init stage: CE + 15 MSE of the pooled features; then CE + PAD; pairs of equal pooled widths only)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill pad --model_s "$S" -r 1 -a 0 -b 1 --pad_l2_weight 15 --trial 1 "$@"
# KD+CTKD (curriculum temperature: the CTKD scripts' weights and lambda schedule, which are --ctkd's defaults)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill kd --model_s "$S" -r 0.1 -a 0.9 -b 0 --ctkd --trial 1 "$@"
# MLKD (two views per image, the strong one RandAugment + Cutout; CE 0.1 on each view, KD weight 0.9, T 4 and 3, 5, 2, 6;
# its configs' epochs and lr per pair: e.g. 240 epochs at lr 0.025 for resnet32x4 -> resnet8x4)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill mlkd --model_s "$S" -r 0.1 -a 0 -b 0.9 --trial 1 "$@"
# MLKD+LS (the LS repository's MLKD: its 480-epoch recipe and per-pair base temperature and weight are the defaults)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill mlkd --logit_stand --model_s "$S" --trial 1 "$@"
# ReviewKD (-b per pair from the authors' script, e.g. 5 for resnet32x4 -> resnet8x4, left to the presets), OFD
# (mdistiller's CIFAR weight, teacher BN in train mode), SimKD (projector factor 2, deployed with the teacher's
# classifier) and SemCKD (the SimKD repository's resnet32x4 -> resnet8x4 weights)
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill reviewkd --model_s "$S" --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill ofd --model_s "$S" -r 1 -a 0 -b 0.001 --teacher_bn train_always --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill simkd --model_s "$S" -r 0 -a 0 -b 1 --factor 2 --trial 1 "$@"
"$PY" train_student.py --path_t "$T" --model_t "$TA" --distill semckd --model_s "$S" -r 1 -a 1 -b 400 --soft 1 --trial 1 "$@"
