"""The web pages: upload form and result (works without JavaScript), and "About the model"."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Blueprint, abort, render_template, request, send_from_directory

from model import advice, config
from model.model_card import gate_rows, limitation_lines
from webapp import heatmap
from webapp.errors import error_response
from webapp.prediction import Result, UploadError, classifier, data_uri, predict_upload, uploaded_image

bp = Blueprint("site", __name__)

# Evaluation plots that the About page may show (folder, text alternative); nothing else of the model
# folder is served.
PLOTS = {
    "confusion_test.png": (
        "evaluation",
        "Confusion matrix on the Test set: for each true class, how many images the model put in each class.",
    ),
    "roc_test.png": (
        "evaluation",
        "ROC curves on the Test set: true-positive against false-positive rate for each class.",
    ),
    "reliability_test.png": (
        "evaluation",
        "Reliability diagram on the Test set: how often the model was right against how sure it was.",
    ),
    "confusion_val.png": ("evaluation", "Confusion matrix on the validation split."),
    "training_curves.png": ("", "Training curves: loss and accuracy per epoch on training and validation."),
}


@bp.app_template_filter("thousands")
def thousands(count: int) -> str:
    """A count with thousands separators (10,015, not 10015)."""
    return f"{count:,}"


@bp.app_context_processor
def upload_settings() -> dict:
    """Settings the upload form hands to the page's script."""
    return {"upload_max_side": config.UPLOAD_MAX_SIDE}


@bp.get("/")
def index():
    """The upload form."""
    return render_template("index.html")


@bp.post("/")
def predict():
    """A plain form post: classify the photo and render the result page."""
    return _render_upload("result.html")


@bp.post("/result")
def result_fragment():
    """The same result as the form post, as an HTML fragment for the page's script to put in place."""
    return _render_upload("_result.html")


def _render_upload(template: str):
    # Both routes answer one upload from the same result; only the template around it differs.
    try:
        result = predict_upload(uploaded_image(request), with_heatmap=False)
    except UploadError as exc:
        return error_response(exc.status, str(exc), exc.code)
    return render_template(template, **result_context(result))


def result_context(result: Result) -> dict:
    """Everything the one result template shows, derived from one prediction."""
    prediction = result.prediction
    photo = heatmap.display_copy(result.image)  # shrunk once for all three pictures of the page
    weights = heatmap.map_at(photo.size, prediction.class_map)  # resized once for the overlay
    ranked = sorted(prediction.probabilities.items(), key=lambda item: item[1], reverse=True)
    return {
        "prediction": prediction,
        "advice": prediction.advice,
        "ranked": ranked,
        "risk_of_class": config.RISK_OF_CLASS,
        "percent": advice.percent,
        "photo_uri": data_uri(heatmap.jpeg_bytes(photo), "image/jpeg"),
        "heatmap_uri": data_uri(heatmap.jpeg_bytes(heatmap.overlay(photo, weights)), "image/jpeg"),
        "legend_uri": legend_uri(),
        "caveats": result.caveats,
        "disclaimer": advice.DISCLAIMER,
        "metadata": classifier().metadata,
    }


@cache
def legend_uri() -> str:
    """The heat map's colour legend, drawn once from the same colour ramp as the map."""
    return data_uri(heatmap.png_bytes(heatmap.legend()), "image/png")


@bp.get("/about")
def about():
    """What the model is, how good it is, what it cannot do, then how it works, from its metadata."""
    metadata = classifier().metadata
    metrics = metadata.get("metrics", {})
    return render_template(
        "about.html",
        metadata=metadata,
        metrics=metrics,
        test_sets=[(name, metrics[key]) for key, name in config.TEST_SUBSETS.items() if metrics.get(key)],
        risk_groups=config.RISK_GROUPS,
        plots=_available_plots(),
        limitations=limitation_lines(metrics),
        threshold=advice.operating_threshold(metadata),
        levels=[(level, advice.LEVELS[level]) for level in advice.LEVEL_ORDER],
        percent=advice.percent,
        gate_rows=gate_rows(metadata.get(config.GATE_METADATA_KEY, {}).get("figures", {})),
    )


@bp.get("/model/plots/<name>")
def plot(name: str):
    """One evaluation plot of the served model."""
    if name not in PLOTS:
        abort(404)
    folder = Path(classifier().model_dir) / PLOTS[name][0]
    return send_from_directory(folder, name, max_age=3600)


def _available_plots() -> list[tuple[str, str]]:
    model_dir = Path(classifier().model_dir)
    return [(name, alt) for name, (sub, alt) in PLOTS.items() if (model_dir / sub / name).is_file()]
