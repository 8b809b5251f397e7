#!/usr/bin/env bash
# Create .venv-label: MONAI Label 0.8.5 and medseg, for `medseg serve`. Safe to run again: it only
# reinstalls when this script, scripts/constraints-label.txt or pyproject.toml changed (a stamp file
# holds their hash). The environment is separate from .venv because MONAI Label needs older releases
# (pydicom<3, numpy<2, monai 1.5.2) than the core's own environment. About 5.5 GB, mostly torch's CUDA
# libraries (the default torch build; it also runs on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${MEDSEG_LABEL_VENV:-.venv-label}"
CONSTRAINTS=scripts/constraints-label.txt
want="$(cat scripts/setup_label.sh "$CONSTRAINTS" pyproject.toml | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.medseg-label-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/monailabel" ]; then
  exit 0
fi
start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS")
"$VENV/bin/python" -m pip install --quiet --upgrade pip "setuptools>=77" wheel
# torch first: sam2 (a dependency of monailabel on Python >= 3.10) is a source package that
# imports torch while it builds, hence --no-build-isolation below.
"${pip[@]}" torch torchvision
"${pip[@]}" --no-build-isolation monailabel monai "pydicom<3" "pynetdicom<3" "dicomweb-client<0.61"
# medseg needs jsonschema>=4.18 (Draft 2020-12); pydicom-seg (a MONAI Label dependency) asks for <4 but
# only uses Draft4Validator and RefResolver, which 4.x still has, so pip's conflict warning is expected.
"${pip[@]}" --no-build-isolation -e ".[test]"
"$VENV/bin/python" -c "import monailabel, monai, pydicom, numpy, pipelines.segment" >/dev/null
echo "$want" > "$stamp"
echo "setup_label: $VENV ready in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
