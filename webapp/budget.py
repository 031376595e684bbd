"""A per-worker budget for upload bytes being received: past it, a new upload is told to retry (503 busy).

Uploads are held in memory (webapp.InMemoryRequest: a medical photo never touches the disk), so
without a bound a worker's memory grows with its open connections: 100 gevent connections times the
12 MB upload limit is 1.2 GB a worker, and 40 clients each sending 11 MB took the whole server to
633 MB (PSS). Each upload reserves its declared Content-Length (the upload limit when it declares
none) before its body is read, and gives it back when its request ends. What it cannot tell: a client
that declares a large body and sends it slowly holds its share until the request deadline cuts it
(gunicorn's `timeout`, 25 s), so a few such clients can turn large uploads away for that long.
"""

from __future__ import annotations

import threading

from flask import Flask, g, request

# Seconds a client told "busy" is asked to wait: a few photos' time on two cores.
RETRY_AFTER_S = 2
BUSY_MESSAGE = "The server is receiving too many photos at once. Please try again in a few seconds."
# The routes that take a photo (blueprint.function): the only ones that hold a body.
UPLOAD_ENDPOINTS = ("api.predict", "site.predict", "site.result_fragment")
# An upload over the size limit but declaring at most this many bytes is read and dropped before
# its 413, as for the 503 below; a larger one is answered at once, and its client may see a reset.
DISCARD_MAX_BYTES = 64 * 2**20


class UploadBudget:
    """Bytes of request bodies one worker may hold at once; reserve before reading, release after."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # gevent needs none; the threaded worker of the benchmark does

    def reserve(self, size: int) -> bool:
        """Take `size` bytes of the budget if they fit (a lone upload always fits), else False."""
        with self._lock:
            if self.held and self.held + size > self.limit:
                return False
            self.held += size
            return True

    def release(self, size: int) -> None:
        """Give back bytes taken by reserve()."""
        with self._lock:
            self.held -= size


def discard_body(chunk: int = 64 * 1024) -> None:
    """Read the request's body and keep none of it.

    Answering before the body is read would close the connection on a client still sending, which
    then sees a reset instead of the 503 (Python's urllib does); the read and idle deadlines of
    webapp.worker bound how long this can take.
    """
    while request.stream.read(chunk):
        pass


def discard_oversized_body(chunk: int = 64 * 1024) -> None:
    """discard_body for an upload over the size limit (Werkzeug's stream refuses to read those)."""
    left = request.content_length or 0
    if left > DISCARD_MAX_BYTES:
        return
    stream = request.environ["wsgi.input"]  # the server's stream ends at the declared length
    while left > 0:
        data = stream.read(min(chunk, left))
        if not data:
            return
        left -= len(data)


def init_app(app: Flask) -> None:
    """Reserve each upload's bytes before its body is read; answer 503 busy when they do not fit."""
    from webapp.errors import error_response

    budget = UploadBudget(app.config["UPLOAD_BUDGET_MB"] * 1024 * 1024)
    app.extensions["upload_budget"] = budget

    @app.before_request
    def reserve_upload():
        if request.endpoint not in UPLOAD_ENDPOINTS or request.method != "POST":
            return None  # other routes read no body (a 404 or 405 keeps its own answer)
        limit = app.config["MAX_CONTENT_LENGTH"]
        declared = request.content_length
        size = limit if declared is None else declared  # a chunked body may be up to the limit
        if size == 0 or size > limit:
            return None  # nothing to hold, or Werkzeug's 413 answers it without holding the body
        if not budget.reserve(size):
            discard_body()
            response, status = error_response(503, BUSY_MESSAGE, "busy")
            response = app.make_response((response, status))
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        g.upload_reserved = size
        return None

    @app.teardown_request
    def release_upload(_error):
        size = g.pop("upload_reserved", 0)
        if size:
            budget.release(size)
