"""The web site and JSON API: `create_app()` builds a Flask app that serves the committed model."""

from __future__ import annotations

import logging
import os

from flask import Flask
from flask_bootstrap import Bootstrap5

from model import config
from webapp.classifier import Classifier

bootstrap = Bootstrap5()

DEFAULTS = {
    "MODEL_DIR": str(config.MODEL_DIR),
    # Phone photos are 2-8 MB as JPEG; 16-bit PNGs and HEIC-to-JPEG exports a bit more.
    "MAX_CONTENT_LENGTH": 12 * 1024 * 1024,
    "BOOTSTRAP_SERVE_LOCAL": True,  # every asset from this app: the page works with no internet
    "INFERENCE_THREADS": 1,
}


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment, then test_config; load the classifier once."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("SKIN")  # e.g. SKIN_MODEL_DIR, SKIN_MAX_CONTENT_LENGTH
    if "MODEL_DIR" in os.environ:
        app.config["MODEL_DIR"] = os.environ["MODEL_DIR"]
    if test_config:
        app.config.update(test_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if "CLASSIFIER" in app.config:  # tests may hand in a classifier built from a fixture model
        classifier = app.config["CLASSIFIER"]
    else:
        classifier = Classifier.from_model_dir(app.config["MODEL_DIR"], app.config["INFERENCE_THREADS"])
    app.extensions["classifier"] = classifier

    bootstrap.init_app(app)
    from webapp import api, errors, security, views

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    errors.init_app(app)
    security.init_app(app)
    return app
