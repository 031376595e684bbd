#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run the whole test suite.
# Real-data tests need ISIC_DATA_DIR (and HAM_METADATA_PATH); without them they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
exec .venv/bin/python -m pytest "$@"
