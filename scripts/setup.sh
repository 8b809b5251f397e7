#!/usr/bin/env bash
# Create .venv and install medseg with its test tools. Safe to run again: it only reinstalls when
# pyproject.toml or the constraints changed. torch stays pinned to the CPU build named in
# scripts/constraints.txt, so no other package can pull a CUDA build in.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${MEDSEG_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.medseg-installed"
want="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c scripts/constraints.txt "$(grep -E '^torch==' scripts/constraints.txt)"
"$VENV/bin/python" -m pip install --quiet -c scripts/constraints.txt -e ".[test]"
echo "$want" > "$stamp"
