#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# The published ImageNet pairs (mdistiller's configs): ResNet-34 -> ResNet-18 and ResNet-50 -> MobileNetV1, one line per
# method (kd, KD+DOT, at, crd, ofd, reviewkd, dkd, dist, mlkd). Each run takes --dataset imagenet's recipe (100
# epochs, global batch 512 at lr 0.2 or the method's own, x0.1 at 30/60/90; docs/imagenet.md), so no line repeats it.
#   bash scripts/run_imagenet.sh                      # both pairs
#   bash scripts/run_imagenet.sh r34_r18 --trial 2    # one pair; extra flags go to every run
# DATA (default ./data/imagenet) holds train/ and val/ (ImageFolder layout). The teachers are torchvision's published
# IMAGENET1K_V1 weights (--path_t torchvision, its cache), or the files in TEACHER_R34 / TEACHER_R50.
# NPROC processes per node (default 1: plain python; on a GPU machine one per GPU) start with torchrun; NNODES > 1
# nodes meet at MASTER_ADDR:MASTER_PORT (c10d rendezvous, RUN_ID names the job): run the same command on every node.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"
PAIRS="r34_r18 r50_mv1"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then PAIRS="$1"; shift; fi
DATA="${DATA:-./data/imagenet}"
NPROC="${NPROC:-1}"
NNODES="${NNODES:-1}"

launch() {
  if [ "$NPROC" -gt 1 ] || [ "$NNODES" -gt 1 ]; then
    "$PY" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC" --rdzv_backend=c10d \
      --rdzv_endpoint="${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}" --rdzv_id="${RUN_ID:-imagenet_kd}" \
      train_student.py "$@"
  else
    "$PY" train_student.py "$@"
  fi
}

for PAIR in $PAIRS; do
  case "$PAIR" in
    r34_r18) TA=ResNet34; S=ResNet18; T="${TEACHER_R34:-torchvision}" ;;
    r50_mv1) TA=ResNet50; S=MobileNetV1; T="${TEACHER_R50:-torchvision}" ;;
    *) echo "error: unknown pair '$PAIR'; use r34_r18 or r50_mv1" >&2; exit 1 ;;
  esac
  echo "teacher $TA: $T; student $S; data $DATA; $NNODES node(s) x $NPROC process(es)" >&2
  # --save_steps: a resumable checkpoint every 1000 steps (an epoch is 2,503 steps of 512)
  COMMON=(--dataset imagenet --data_root "$DATA" --path_t "$T" --model_t "$TA" --model_s "$S" --save_steps 1000
          --trial 1)
  # KD (T 1, CE 0.5 / KD 0.5)
  launch "${COMMON[@]}" --distill kd "$@"
  # KD+DOT (delta 0.09)
  launch "${COMMON[@]}" --distill kd --optimizer dot "$@"
  # AT (p 2, -b 1000)
  launch "${COMMON[@]}" --distill attention "$@"
  # CRD (global batch 256, lr 0.1, negatives with replacement)
  launch "${COMMON[@]}" --distill crd "$@"
  # OFD (global batch 128, lr 0.05, -b 1e-4: mdistiller's ResNet-50 -> MobileNetV1 config, used for both pairs)
  launch "${COMMON[@]}" --distill ofd "$@"
  # ReviewKD (global batch 256, lr 0.1, -b 1 / 8)
  launch "${COMMON[@]}" --distill reviewkd "$@"
  # DKD (T 1, beta 0.5 / 2, one warm-up epoch)
  launch "${COMMON[@]}" --distill dkd "$@"
  # DIST (tau 1, -b 2, global batch 256, lr 0.1, Nesterov)
  launch "${COMMON[@]}" --distill dist "$@"
  # MLKD (T 1, CE 0.5 / KD 0.5)
  launch "${COMMON[@]}" --distill mlkd "$@"
done
