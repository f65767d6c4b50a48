#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# The whole GPU verification (every method, trials, benchmark, torchrun, precision) with one report:
#   bash scripts/gpu_check.sh                        # CUDA, about 8 minutes on one H100-class GPU
#   bash scripts/gpu_check.sh --device cpu --quick   # the same plumbing on a CPU in a few minutes
# Writes save/gpu_check/report.md (the path is printed); exits non-zero when a check fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" scripts/gpu_check.py "$@"
