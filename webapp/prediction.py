"""The one path from uploaded bytes to a prediction, shared by the page and the API."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from flask import Request, current_app
from PIL import Image
from werkzeug.datastructures import FileStorage

from model.preprocessing import ImageError, ImageTooLarge, IncompleteImage, UnsupportedImage, decode_image
from webapp import heatmap
from webapp.classifier import Classifier, Prediction
from webapp.gate import Gate, refusal_message

IMAGE_FIELD = "image"  # the multipart field of the photo, for the form and the API


class UploadError(ValueError):
    """A bad upload; carries the HTTP status, a stable error code and a message that is safe to show."""

    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Result:
    """A prediction, its caveats, and the heat map drawn over the photo (empty when not asked for)."""

    prediction: Prediction
    caveats: list[dict[str, str]]  # {"code", "message"} for each reason to trust this answer less
    image: Image.Image  # the decoded upload, in memory only, for the page's pictures
    heatmap_png: bytes = b""


def classifier() -> Classifier:
    """The classifier loaded once for this worker."""
    return current_app.extensions["classifier"]


def uploaded_image(request: Request) -> FileStorage:
    """The file in the field `image`, or an UploadError that names the field and the real cause."""
    if request.mimetype != "multipart/form-data":
        kind = request.mimetype or "a request without a body type"
        raise UploadError(
            f"Send the photo as multipart/form-data in the field `{IMAGE_FIELD}`; this request is {kind}.",
            415,
        )
    upload = request.files.get(IMAGE_FIELD)
    if not request.files and not request.form and _unparsed_multipart(request):
        raise UploadError(
            "The multipart/form-data body could not be read: its parts do not match the boundary "
            "declared in the Content-Type header, or it declares none. Let your HTTP library set that "
            f"header (do not set it yourself), for example curl -F {IMAGE_FIELD}=@photo.jpg."
        )
    if upload is None and request.files:
        fields = ", ".join(f"`{name}`" for name in request.files)
        raise UploadError(
            f"No file was uploaded in the field `{IMAGE_FIELD}`: the request has a file in {fields}. "
            f"Send the photo in the field `{IMAGE_FIELD}`.",
            code="missing_image",
        )
    if upload is None and request.form.get(IMAGE_FIELD) is not None:
        raise UploadError(
            f"The field `{IMAGE_FIELD}` arrived as text, not as a file: send the photo as a file part "
            f"with a filename (for example curl -F {IMAGE_FIELD}=@photo.jpg).",
            code="missing_image",
        )
    if upload is None or not upload.filename:
        raise UploadError(
            f"No file was uploaded in the field `{IMAGE_FIELD}`. Choose a photo of the skin lesion.",
            code="missing_image",
        )
    count = len(request.files.getlist(IMAGE_FIELD))
    if count > 1:
        # Answering one of them would leave the client guessing which photo the answer is for.
        raise UploadError(
            f"The field `{IMAGE_FIELD}` holds {count} files; send one photo per request.",
            code="too_many_images",
        )
    return upload


def _unparsed_multipart(request: Request) -> bool:
    """A multipart request without a boundary, or with a body whose parts its boundary did not find."""
    # An empty form is "--boundary--" and a line end: anything much longer held parts.
    return "boundary" not in request.mimetype_params or (request.content_length or 0) > 128


def gate() -> Gate:
    """The image gate loaded once for this worker."""
    return current_app.extensions["gate"]


def predict_upload(upload: FileStorage, with_heatmap: bool = True) -> Result:
    """Decode an upload (in memory only), refuse it if the gate says so, classify it, draw the heat map.

    upload comes from uploaded_image(), which has already refused a missing file. A refusal is an
    UploadError with status 422 and one of the gate's codes (config.REFUSAL_CODES).
    """
    data = upload.read()  # held in memory only; never written to disk or logged
    model = classifier()
    try:
        image = decode_image(data, model.input_size)
    except ImageError as exc:
        status, code = _status_for(exc)
        # A picture refused as unreadable (422) is a refusal like the gate's, worded like one.
        message = refusal_message(str(exc)) if status == 422 else str(exc)
        raise UploadError(message, status, code) from None
    refusal = gate().check(image)
    if refusal is not None:
        raise UploadError(refusal.message, 422, refusal.code)
    prediction = model.predict(image)
    caveats = heatmap.frame_caveats(image, prediction.class_map)
    if not with_heatmap:
        return Result(prediction, caveats, image)
    photo = heatmap.display_copy(image)
    overlaid = heatmap.overlay(photo, heatmap.map_at(photo.size, prediction.class_map))
    return Result(prediction, caveats, image, heatmap.png_bytes(overlaid))


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
