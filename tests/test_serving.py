"""Real gunicorn on loopback with the project's configuration (the browser tests: test_browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.loopback import gunicorn_server, post_image
from model import config

pytestmark = pytest.mark.slow


def test_gunicorn_serves_the_api_over_http(tiny_model_dir, sample_jpeg):
    with gunicorn_server(tiny_model_dir, workers=2) as (base, _):
        status, body = post_image(base, sample_jpeg.read_bytes())
        assert status == 200
        assert set(body["probabilities"]) == set(config.CLASS_NAMES)
        status, body = post_image(base, b"not an image", "x.txt")
        assert status == 415 and "not an image" in body["error"]["message"]


def test_gunicorn_refuses_to_start_without_a_model(tmp_path):
    env = {**os.environ, "PORT": "0", "MODEL_DIR": str(tmp_path / "missing"), "WEB_CONCURRENCY": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0"],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "No model metadata" in result.stdout + result.stderr
