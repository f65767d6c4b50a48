#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# EMKD (CRD-EMKD) scripts/search.sh: block composition search for myresnet20 under a resnet110 teacher with
# CRD, without and with milestone checking (default --mc_weight 0.001). Each search trains up to six students.
#   bash scripts/search_emkd.sh                       # candidates scored on a held-out 10% of the training set
#   bash scripts/search_emkd.sh --select_on test      # EMKD's selection on the test set
# Extra arguments go to both searches; TEACHER overrides the teacher checkpoint.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"
TEACHER="${TEACHER:-./save/models/resnet110_vanilla/ckpt_epoch_240.pth}"

"$PY" search.py --model_t resnet110 --path_t "$TEACHER" --distill crd \
  --model_s myresnet20 --block_depth 3,3,3 -a 0 -b 0.8 --trial 1 "$@"
"$PY" search.py --model_t resnet110 --path_t "$TEACHER" --distill crd --mc 1 \
  --model_s myresnet20 --block_depth 3,3,3 -a 0 -b 0.8 --trial 1 "$@"
