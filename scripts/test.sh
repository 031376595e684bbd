#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run the whole test suite.
# Real-data tests need ISIC_DATA_DIR (and HAM_METADATA_PATH); without them they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints-serve.txt -e .
# Front-end tools the tests use: axe-core (accessibility checks), Bootstrap and PurgeCSS (the CSS check).
if [ -f package-lock.json ] && command -v npm >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec .venv/bin/python -m pytest "$@"
