"""The web site and JSON API: `create_app()` builds a Flask app that serves the committed model."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from flask import Config, Flask, Request

from model import config
from webapp.classifier import Classifier
from webapp.gate import Gate


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory.

    Werkzeug spools file parts over 500 KB to a temporary file; uploads are medical photos that must
    never touch the disk, and MAX_CONTENT_LENGTH already bounds how much memory one can take.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


DEFAULTS = {
    "MODEL_DIR": str(config.MODEL_DIR),
    # Phone photos are 2-8 MB as JPEG; 16-bit PNGs and HEIC-to-JPEG exports a bit more.
    "MAX_CONTENT_LENGTH": 12 * 1024 * 1024,
    # The served model runs the network on 8 orientations of the photo. Two threads per interpreter
    # halve one request's latency (HTTP p50 15.7 -> 11.3 ms on 2 cores, measured) for about 6% of
    # the throughput at concurrency 16, when both workers compete for the cores.
    "INFERENCE_THREADS": 2,
    # Upload bytes one worker holds while receiving (webapp.budget): two workers' bodies, decodes and
    # resident memory stay inside a 512 MB container; at about 4 MB a phone photo, 8 at once a worker.
    "UPLOAD_BUDGET_MB": 32,
}


# Settings that must be positive numbers (SKIN_<name> in the environment), and the kind of each.
POSITIVE_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "MAX_CONTENT_LENGTH": int,
    "INFERENCE_THREADS": int,
    "UPLOAD_BUDGET_MB": (int, float),
}


class SettingsError(ValueError):
    """A SKIN_ setting has a value the server cannot run with."""


def check_settings(settings) -> None:
    """Raise SettingsError naming the first setting that is not a positive number of its kind."""
    for name, kind in POSITIVE_SETTINGS.items():
        value = settings.get(name)
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            whole = "whole " if kind is int else ""
            raise SettingsError(f"SKIN_{name} must be a positive {whole}number, not {value!r}")


def environment_settings() -> Config:
    """DEFAULTS with the SKIN_ environment variables applied, as create_app() reads them."""
    settings = Config(Path.cwd())
    settings.from_mapping(DEFAULTS)
    settings.from_prefixed_env("SKIN")
    return settings


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment, then test_config; load the classifier once."""
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    # "//" in a path is a 404, not a redirect: Werkzeug's redirect would be built from the request's
    # Host header, which the client chooses.
    app.url_map.merge_slashes = False
    app.config.update(environment_settings())  # e.g. SKIN_MAX_CONTENT_LENGTH, SKIN_MODEL_DIR
    if test_config:
        app.config.update(test_config)
    check_settings(app.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # Loaded once per worker; a missing or broken model raises here, so the worker never serves.
    app.extensions["classifier"] = Classifier.from_model_dir(
        app.config["MODEL_DIR"], app.config["INFERENCE_THREADS"]
    )
    # The image gate is part of the model folder; a folder without one is not served (no upload may
    # reach the classifier unchecked).
    app.extensions["gate"] = Gate.from_metadata(
        app.config["MODEL_DIR"], app.extensions["classifier"].metadata, app.config["INFERENCE_THREADS"]
    )

    from webapp import api, assets, budget, errors, security, views

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    errors.init_app(app)
    budget.init_app(app)
    security.init_app(app)
    assets.init_app(app)
    return app
