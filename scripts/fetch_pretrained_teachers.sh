#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# RepDistiller's six CIFAR-100 teachers -> save/models/<arch>_vanilla/ckpt_epoch_240.pth
# (original host, then mdistiller's release; --tar FILE for an archive fetched elsewhere).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" scripts/fetch_pretrained_teachers.py "$@"
