"""Error pages and JSON errors: a clear message and a 4xx, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError

log = logging.getLogger(__name__)

# Stable machine-readable codes: clients branch on `code`, people read `message`. Refusals of the
# image gate (422) add their own codes (not_a_lesion, not_dermoscopic, poor_quality).
CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_image",
    500: "internal_error",
    503: "not_ready",
}

MESSAGES = {
    400: "The request could not be understood.",
    404: "There is no page at this address.",
    405: "This address does not accept that method.",
    408: "The upload stalled before it was complete. Please try again.",
    413: "The file is too large. Please upload a photo under {limit} MB.",
    500: "Something went wrong on our side. Please try again.",
}


def wants_json() -> bool:
    """API paths and clients that prefer JSON get JSON errors; browsers get a page."""
    if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, message: str, code: str | None = None):
    """A JSON body `{"error": {"code", "message", "status"}}` or an HTML page, and the status."""
    code = code or CODES.get(status, "error")
    if wants_json():
        return jsonify({"error": {"code": code, "message": message, "status": status}}), status
    if request.method == "POST" and request.path == "/":
        # A failed upload goes back to the upload form, so the person can try another photo.
        return render_template("index.html", error=message), status
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    """Register handlers for every HTTP error and for unexpected exceptions."""

    @app.errorhandler(HTTPException)
    def handle_http(error: HTTPException):
        limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        message = MESSAGES.get(error.code, error.description or "").format(limit=limit)
        return error_response(error.code or 500, message)

    @app.errorhandler(TimeoutError)
    @app.errorhandler(ClientDisconnected)
    def handle_stalled_client(error: Exception):
        # The client stopped sending its upload: webapp.worker sets a read timeout on each
        # connection, and Werkzeug reports the timed-out read as a disconnection.
        if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            return error_response(408, MESSAGES[408])
        return error_response(400, "The upload ended before it was complete. Please try again.")

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        # The traceback goes to the server log only; the request body is never logged.
        log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.path, exc_info=True)
        return error_response(InternalServerError.code, MESSAGES[500])
