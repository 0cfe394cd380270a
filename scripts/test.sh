#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, notebooks included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
