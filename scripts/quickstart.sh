#!/usr/bin/env bash
# Offline quickstart: teacher, student from scratch and KD student on the bundled digits data set.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" scripts/quickstart.py "$@"
