"""The one path from uploaded bytes to a prediction, shared by the page and the API."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from flask import current_app
from werkzeug.datastructures import FileStorage

from model.preprocessing import ImageError, ImageTooLarge, IncompleteImage, UnsupportedImage, decode_image
from webapp import heatmap
from webapp.classifier import Classifier, Prediction


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


def predict_upload(upload: FileStorage | None, with_heatmap: bool = True) -> Result:
    """Decode an uploaded file (in memory only), classify it, and draw the heat map."""
    if upload is None or not upload.filename:
        raise UploadError("No file was uploaded. Choose a photo of the skin lesion.")
    data = upload.read()  # held in memory only; never written to disk or logged
    model = classifier()
    try:
        image = decode_image(data, model.input_size)
    except ImageError as exc:
        raise UploadError(str(exc), *_status_for(exc)) from None
    prediction = model.predict(image)
    if not with_heatmap:
        return Result(prediction, b"")
    return Result(prediction, heatmap.png_bytes(heatmap.overlay(image, prediction.class_map)))


def data_uri(content: bytes, mime: str) -> str:
    """Inline a picture into the page, so nothing of the upload is served from a URL."""
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def _status_for(error: ImageError) -> tuple[int, str | None]:
    """The HTTP status and error code of a refused upload (None: the status's default code)."""
    if isinstance(error, IncompleteImage):
        # Most of the picture is missing: the same answer as the image gate's quality refusal.
        return 422, "poor_quality"
    if isinstance(error, ImageTooLarge):
        return 413, None
    if isinstance(error, UnsupportedImage):
        return 415, None
    return 400, None
