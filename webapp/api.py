"""The JSON API: /api/v1/predict, /api/v1/model, /api/v1/openapi.json, /healthz, /readyz."""

from __future__ import annotations

import base64

import numpy as np
from flask import Blueprint, jsonify, request

from model.advice import DISCLAIMER
from webapp.errors import error_response
from webapp.openapi import HEATMAP_FALSE, HEATMAP_TRUE, openapi_document
from webapp.prediction import UploadError, classifier, predict_upload, uploaded_image

bp = Blueprint("api", __name__)


def heatmap_wanted() -> bool:
    """The `heatmap` parameter (query or form) as a boolean; any other value is a 400."""
    value = request.args.get("heatmap")
    if value is None and request.mimetype == "multipart/form-data":
        value = request.form.get("heatmap")
    value = (value or "").strip().lower()
    if value and value not in HEATMAP_TRUE + HEATMAP_FALSE:
        raise UploadError(
            f"The parameter `heatmap` must be true or false (also 1/0, yes/no, on/off); got {value[:40]!r}.",
            code="invalid_parameter",
        )
    return value in HEATMAP_TRUE


@bp.post("/api/v1/predict")
def predict():
    """Classify a multipart image upload (field `image`); `heatmap=true` adds the heat map PNG."""
    try:
        want_heatmap = heatmap_wanted()
        result = predict_upload(uploaded_image(request), with_heatmap=want_heatmap)
    except UploadError as exc:
        return error_response(exc.status, str(exc), exc.code)
    prediction = result.prediction
    metadata = classifier().metadata
    body = {
        "model": {"name": metadata["name"], "version": metadata["version"]},
        "top_class": prediction.top_class,
        "probabilities": prediction.probabilities,
        "melanoma_probability": prediction.melanoma_probability,
        "risk_group": prediction.risk_group,
        "risk_probabilities": prediction.risk_probabilities,
        "malignant_flag": prediction.malignant_flag,
        "advice": prediction.advice.as_dict(),
        "inference_ms": round(prediction.inference_ms, 3),
        "heatmap_class": prediction.heatmap_class,
        "caveats": result.caveats,
        "disclaimer": DISCLAIMER,
    }
    if want_heatmap:
        body["heatmap_png_base64"] = base64.b64encode(result.heatmap_png).decode()
    return jsonify(body)


@bp.get("/api/v1/model")
def model_metadata():
    """The served model's metadata: classes, risk groups, input, training and metrics."""
    return jsonify(classifier().metadata)


@bp.get("/api/v1/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API."""
    return jsonify(openapi_document())


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: the model is loaded and produces a valid probability vector."""
    model = classifier()
    probabilities, _ = model.predict_array(np.zeros((*model.input_size, 3), dtype=np.float32))
    if not (np.all(np.isfinite(probabilities)) and abs(float(probabilities.sum()) - 1) < 1e-3):
        # The documented Error shape, JSON whatever the client accepts: probes and scripts read it.
        error = {"code": "not_ready", "message": "model output is not a distribution", "status": 503}
        return jsonify({"error": error}), 503
    return jsonify({"status": "ready", "model": model.metadata["name"], "version": model.metadata["version"]})
