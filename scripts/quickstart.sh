#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# Offline quickstart: teacher, student from scratch and KD student on the bundled digits data set.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" scripts/quickstart.py "$@"
