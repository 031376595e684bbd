"""The one path from uploaded bytes to a prediction, shared by the page and the API."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from flask import current_app
from werkzeug.datastructures import FileStorage

from model.preprocessing import ImageError, ImageTooLarge, UnsupportedImage, decode_image
from webapp import heatmap
from webapp.classifier import Classifier, Prediction
from webapp.gate import Gate


class UploadError(ValueError):
    """A bad upload; carries the HTTP status, a stable error code and a message that is safe to show."""

    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Result:
    """A prediction plus the heat map drawn over the photo (empty when not asked for)."""

    prediction: Prediction
    heatmap_png: bytes


def classifier() -> Classifier:
    """The classifier loaded once for this worker."""
    return current_app.extensions["classifier"]


def gate() -> Gate:
    """The image gate loaded once for this worker."""
    return current_app.extensions["gate"]


def predict_upload(upload: FileStorage | None, with_heatmap: bool = True) -> Result:
    """Decode an upload (in memory only), refuse it if the gate says so, classify it, draw the heat map.

    A refusal is an UploadError with status 422 and one of the gate's codes (config.REFUSAL_CODES).
    """
    if upload is None or not upload.filename:
        raise UploadError("No file was uploaded. Choose a photo of the skin lesion.")
    data = upload.read()  # held in memory only; never written to disk or logged
    model = classifier()
    try:
        image = decode_image(data, model.input_size)
    except ImageError as exc:
        raise UploadError(str(exc), _status_for(exc)) from None
    refusal = gate().check(image)
    if refusal is not None:
        raise UploadError(refusal.message, 422, refusal.code)
    prediction = model.predict(image)
    if not with_heatmap:
        return Result(prediction, b"")
    return Result(prediction, heatmap.png_bytes(heatmap.overlay(image, prediction.class_map)))


def data_uri(content: bytes, mime: str) -> str:
    """Inline a picture into the page, so nothing of the upload is served from a URL."""
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def _status_for(error: ImageError) -> int:
    if isinstance(error, ImageTooLarge):
        return 413
    if isinstance(error, UnsupportedImage):
        return 415
    return 400
