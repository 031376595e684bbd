"""Static files: fingerprinted URLs with a year-long cache, and compressed answers (Flask-Compress)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Flask, Response, request
from flask_compress import Compress

LONG_CACHE = "public, max-age=31536000, immutable"
COMPRESS_SETTINGS = {
    "COMPRESS_MIMETYPES": [
        "text/html",
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/json",
        "image/svg+xml",
    ],
    "COMPRESS_ALGORITHM": ["br", "gzip"],
    "COMPRESS_MIN_SIZE": 500,
}

compress = Compress()


def fingerprint(path: Path) -> str:
    """A short content hash of a static file: its URL changes exactly when its bytes do."""
    return _content_hash(path, path.stat().st_mtime_ns)


@cache
def _content_hash(path: Path, modified_ns: int) -> str:
    # Keyed by modification time too, so that an edited file gets a new URL without a restart.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def init_app(app: Flask) -> None:
    """Add `?v=<hash>` to every static URL, cache such URLs for a year, compress text answers."""
    for key, value in COMPRESS_SETTINGS.items():
        app.config.setdefault(key, value)
    compress.init_app(app)
    static = Path(app.static_folder)

    @app.url_defaults
    def add_fingerprint(endpoint: str, values: dict) -> None:
        if endpoint == "static" and "filename" in values and (static / values["filename"]).is_file():
            values["v"] = fingerprint(static / values["filename"])

    # Registered after Flask-Compress, so it runs before it (Flask runs these hooks in reverse).
    @app.after_request
    def cache_fingerprinted(response: Response) -> Response:
        if request.endpoint != "static" or response.status_code != 200:
            return response
        filename = (request.view_args or {}).get("filename", "")
        path = static / filename
        if path.is_file() and request.args.get("v") == fingerprint(path):
            response.headers["Cache-Control"] = LONG_CACHE
        # A file response streams from disk, and Flask-Compress offers no gzip for streams; these files
        # are small, so they are read whole and get gzip or brotli like the pages.
        response.direct_passthrough = False
        response.set_data(response.get_data())
        return response
