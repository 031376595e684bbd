"""The code stays lint-clean and formatted (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from model import config

RUFF = str(Path(sys.executable).parent / "ruff")
TARGETS = ["data_prep", "model", "webapp", "bench", "scripts", "tests", "gunicorn.conf.py"]


def test_ruff_check_finds_nothing():
    result = subprocess.run(
        [RUFF, "check", *TARGETS], cwd=config.PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_ruff_format_leaves_files_unchanged():
    result = subprocess.run(
        [RUFF, "format", "--check", *TARGETS], cwd=config.PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
