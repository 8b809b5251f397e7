#!/usr/bin/env bash
# Set up (if needed) and run the demo: generate a CT phantom, segment it with the shipped CT
# bundle, compare with the phantom's truth. Extra arguments go to `medseg demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/medseg demo "$@"
