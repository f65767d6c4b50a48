#!/usr/bin/env bash
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # the seed READMEs call these with sh
# Runs the whole test suite in the project's environment (created on first use).
#   bash scripts/test.sh            # everything, slow end-to-end runs included
#   bash scripts/test.sh -m "not slow"  # skip the slow end-to-end runs
# Two test processes by default (pytest-xdist), one torch thread each (conftest.py): a 2-core machine's two
# cores; KD_TEST_WORKERS=N (or -n N, 0 for one process) for another count.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest -q -n "${KD_TEST_WORKERS:-2}" tests "$@"
