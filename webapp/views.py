"""The web pages: upload form and result (works without JavaScript), and "About the model"."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, render_template, request, send_from_directory

from model import config
from model.model_card import gate_rows, limitation_lines
from webapp.errors import error_response
from webapp.prediction import UploadError, classifier, data_uri, predict_upload

bp = Blueprint("site", __name__)

# Evaluation plots that the About page may show; nothing else of the model folder is served.
PLOTS = {
    "confusion_test.png": "evaluation",
    "roc_test.png": "evaluation",
    "reliability_test.png": "evaluation",
    "confusion_val.png": "evaluation",
    "training_curves.png": "",
}


@bp.get("/")
def index():
    """The upload form."""
    return render_template("index.html")


@bp.post("/")
def predict():
    """A plain form post: classify the photo and render the result page."""
    try:
        result = predict_upload(request.files.get("image"))
    except UploadError as exc:
        return error_response(exc.status, str(exc), exc.code)
    prediction = result.prediction
    ranked = sorted(prediction.probabilities.items(), key=lambda item: item[1], reverse=True)
    return render_template(
        "result.html",
        prediction=prediction,
        ranked=ranked,
        risk_of_class=config.RISK_OF_CLASS,
        heatmap_uri=data_uri(result.heatmap_png, "image/png"),
        metadata=classifier().metadata,
    )


@bp.get("/about")
def about():
    """What the model is, how it was trained and how well it does, from its metadata."""
    metadata = classifier().metadata
    return render_template(
        "about.html",
        metadata=metadata,
        metrics=metadata.get("metrics", {}),
        risk_groups=config.RISK_GROUPS,
        plots=_available_plots(),
        limitations=limitation_lines(),
        gate_rows=gate_rows(metadata.get(config.GATE_METADATA_KEY, {}).get("figures", {})),
    )


@bp.get("/model/plots/<name>")
def plot(name: str):
    """One evaluation plot of the served model."""
    if name not in PLOTS:
        abort(404)
    folder = Path(classifier().model_dir) / PLOTS[name]
    return send_from_directory(folder, name, max_age=3600)


def _available_plots() -> list[str]:
    model_dir = Path(classifier().model_dir)
    return [name for name, sub in PLOTS.items() if (model_dir / sub / name).is_file()]
