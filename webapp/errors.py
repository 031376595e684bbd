"""Error pages and JSON errors: a clear message, a stable code and a 4xx, never a stack trace."""

from __future__ import annotations

import logging
import math

from flask import Flask, jsonify, render_template, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError

from webapp.budget import UPLOAD_ENDPOINTS, discard_oversized_body

log = logging.getLogger(__name__)

# Stable machine-readable codes: clients branch on `code`, people read `message`. These are the
# defaults per status; an UploadError may carry a more precise one (listed in EXTRA_CODES).
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
# Refusals of the image gate (422): the photo is readable but not one the model can judge. The page's
# heading for each; the message (webapp.gate.REASONS) is the one place that says why and what to do.
REFUSAL_TITLES = {
    "not_a_lesion": "This does not look like a photo of a skin lesion",
    "not_dermoscopic": "This is not a dermatoscope photo",
    "poor_quality": "The photo cannot be judged as it is",
}
EXTRA_CODES = {
    "missing_image": 400,
    "too_many_images": 400,
    "invalid_parameter": 400,
    "too_many_fields": 413,
    "busy": 503,
    **{code: 422 for code in REFUSAL_TITLES},
}

MESSAGES = {
    400: "The request could not be understood.",
    404: "There is no page at this address.",
    405: "This address does not accept that method.",
    408: "The upload stalled before it was complete. Please try again.",
    413: "The file is too large. Please upload a photo under {limit}.",
    500: "Something went wrong on our side. Please try again.",
}
MALFORMED_BODY = (
    "The request's body could not be read: its chunked transfer encoding is malformed. "
    "Send the photo again, as multipart/form-data."
)
FORM_TOO_BIG = (
    "The form has too many fields or a text field that is too long (at most {parts} fields). "
    "Send only the photo in the field `image`."
)
# The page's script asks for the result as an HTML fragment at this path; its errors are fragments too.
FRAGMENT_PATH = "/result"


def wants_json() -> bool:
    """API paths and clients that prefer JSON get JSON errors; browsers get a page."""
    if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def problem(status: int, message: str, code: str) -> dict:
    """What a person sees about a failed upload: a title, the cause, and what to do next."""
    if code in REFUSAL_TITLES:
        # A refusal's message already says what to do next and that it is no reassurance.
        title = REFUSAL_TITLES[code]
        return {"status": status, "code": code, "message": message, "refusal": True, "title": title}
    title = "Something went wrong on our side" if status >= 500 else "The photo could not be analysed"
    next_step = "Please try again in a moment." if status >= 500 else "Choose another photo and try again."
    return {
        "status": status,
        "code": code,
        "message": message,
        "refusal": False,
        "title": title,
        "next_step": next_step,
    }


def error_response(status: int, message: str, code: str | None = None):
    """A JSON body `{"error": {"code", "message", "status"}}` or an HTML page, and the status."""
    code = code or CODES.get(status, "error")
    if wants_json():
        return jsonify({"error": {"code": code, "message": message, "status": status}}), status
    if request.method == "POST" and request.path == FRAGMENT_PATH:
        return render_template("_problem.html", problem=problem(status, message, code)), status
    if request.method == "POST" and request.path == "/":
        # A failed upload goes back to the upload form, so the person can try another photo.
        return render_template("index.html", problem=problem(status, message, code)), status
    return render_template("error.html", status=status, message=message), status


def size_words(limit: int) -> str:
    """An upload limit in bytes as a person reads it, rounded down so that "under" stays true."""
    if limit >= 2**20:
        return f"{math.floor(limit / 2**20 * 10) / 10:g} MB"
    return f"{limit // 1024} KB" if limit >= 1024 else f"{limit} bytes"


def init_app(app: Flask) -> None:
    """Register handlers for every HTTP error and for unexpected exceptions."""

    @app.errorhandler(HTTPException)
    def handle_http(error: HTTPException):
        status = error.code or 500
        limit = size_words(app.config["MAX_CONTENT_LENGTH"])
        message = MESSAGES.get(status, error.description or "").format(limit=limit)
        code = None
        length = request.content_length
        too_large = length is not None and length > app.config["MAX_CONTENT_LENGTH"]
        if status == 413 and too_large and request.endpoint in UPLOAD_ENDPOINTS:
            discard_oversized_body()  # else a client still sending sees a reset (Python's urllib)
        if status == 413 and not too_large and length is not None:
            # Werkzeug raises 413 for too many form parts too; that is not a file size problem.
            message, code = (
                FORM_TOO_BIG.format(parts=app.config.get("MAX_FORM_PARTS", 1000)),
                "too_many_fields",
            )
        response = app.make_response(error_response(status, message, code))
        if status == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(TimeoutError)
    @app.errorhandler(ClientDisconnected)
    def handle_stalled_client(error: Exception):
        # The client stopped sending its upload: webapp.worker sets a read timeout on each
        # connection, and Werkzeug reports the timed-out read as a disconnection.
        if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            return error_response(408, MESSAGES[408])
        return error_response(400, "The upload ended before it was complete. Please try again.")

    @app.errorhandler(ParseException)
    def handle_malformed_body(_error: ParseException):
        # gunicorn found the body's framing broken (a bad chunk size) while the app read it. Its
        # message quotes the body, so it is neither logged nor shown.
        return error_response(400, MALFORMED_BODY)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        # The traceback goes to the server log only; the request body is never logged.
        log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.path, exc_info=True)
        return error_response(InternalServerError.code, MESSAGES[500])
