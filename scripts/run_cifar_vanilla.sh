#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# Train RepDistiller's six CIFAR-100 teachers (ResNet50 included, which RepDistiller's own script could not).
# Extra arguments are passed to every run, e.g. --epochs 2 for a smoke test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
cd "$ROOT"
for m in wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50; do
  "$PY" train_teacher.py --model "$m" "$@"
done
