"""Real gunicorn on loopback with the project's configuration (the browser tests: test_browser.py)."""

from __future__ import annotations

import pytest

from bench.loopback import gunicorn_server, gunicorn_start_failure, post_image
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
    result = gunicorn_start_failure(tmp_path / "missing")
    assert result.returncode != 0
    assert "No model metadata" in result.stdout + result.stderr
