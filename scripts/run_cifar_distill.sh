#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# RepDistiller's CIFAR-100 distillation lines (teacher resnet32x4, student resnet8x4), plus ICKD-C and DKD.
# Fetch the teachers first: bash scripts/fetch_pretrained_teachers.sh
# Extra arguments go to every run, e.g.:  bash scripts/run_cifar_distill.sh --epochs 1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-python}"
T=./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
S=resnet8x4

# KD
"$PY" train_student.py --path_t $T --distill kd --model_s $S -r 0.1 -a 0.9 -b 0 --trial 1 "$@"
# FitNet
"$PY" train_student.py --path_t $T --distill hint --model_s $S -a 0 -b 100 --trial 1 "$@"
# AT
"$PY" train_student.py --path_t $T --distill attention --model_s $S -a 0 -b 1000 --trial 1 "$@"
# SP
"$PY" train_student.py --path_t $T --distill similarity --model_s $S -a 0 -b 3000 --trial 1 "$@"
# CC
"$PY" train_student.py --path_t $T --distill correlation --model_s $S -a 0 -b 0.02 --trial 1 "$@"
# VID
"$PY" train_student.py --path_t $T --distill vid --model_s $S -a 0 -b 1 --trial 1 "$@"
# RKD
"$PY" train_student.py --path_t $T --distill rkd --model_s $S -a 0 -b 1 --trial 1 "$@"
# PKT
"$PY" train_student.py --path_t $T --distill pkt --model_s $S -a 0 -b 30000 --trial 1 "$@"
# AB
"$PY" train_student.py --path_t $T --distill abound --model_s $S -a 0 -b 1 --trial 1 "$@"
# FT
"$PY" train_student.py --path_t $T --distill factor --model_s $S -a 0 -b 200 --trial 1 "$@"
# FSP
"$PY" train_student.py --path_t $T --distill fsp --model_s $S -a 0 -b 50 --trial 1 "$@"
# NST
"$PY" train_student.py --path_t $T --distill nst --model_s $S -a 0 -b 50 --trial 1 "$@"
# CRD
"$PY" train_student.py --path_t $T --distill crd --model_s $S -a 0 -b 0.8 --trial 1 "$@"
# CRD+KD
"$PY" train_student.py --path_t $T --distill crd --model_s $S -a 1 -b 0.8 --trial 1 "$@"
# ICKD-C without and with KL (ICKD's README)
"$PY" train_student.py --path_t $T --distill ickd --model_s $S -a 0 -b 2.5 --trial 1 "$@"
"$PY" train_student.py --path_t $T --distill ickd --model_s $S -a 1 -b 2.5 --trial 1 "$@"
# DKD (mdistiller's CIFAR recipe: CE 1, alpha 1, beta 8, T 4, 20-epoch warm-up)
"$PY" train_student.py --path_t $T --distill dkd --model_s $S -r 1 -a 0 -b 1 --dkd_alpha 1 --dkd_beta 8 --trial 1 "$@"
