#!/usr/bin/env bash
# Sourced by the run_*.sh scripts: PY is the interpreter to run the entry scripts with. An explicit PY wins;
# otherwise the project's own .venv (made by quickstart.sh / test.sh) when it exists, so that the scripts work
# right after the quickstart without activating anything; otherwise the python on PATH.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
