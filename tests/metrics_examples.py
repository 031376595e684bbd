"""Synthetic metrics in the schema `model.evaluate` writes, for the model card and About page tests."""

from __future__ import annotations

from model import config

HEADLINE = (
    "accuracy",
    "balanced_accuracy",
    "melanoma_vs_rest_auc",
    "melanoma_vs_nevus_auc",
    "malignant_vs_benign_auc",
    "malignant_sensitivity",
    "malignant_specificity",
    "expected_calibration_error",
)


def subset_metrics(images: int, dx_level: bool = False, recall: dict | None = None, **figures) -> dict:
    """One subset's metrics: the given headline figures (0.7 otherwise), per-label rows, by source.

    recall overrides the recall of some labels (0.8 otherwise); intervals are the figure +- 0.05.
    """
    names = list(config.HAM_DX_CODES if dx_level else config.CLASS_NAMES)
    headline = {key: figures.pop(key, 0.7) for key in HEADLINE}
    recall = {name: (recall or {}).get(name, 0.8) for name in names}
    per_label = images // len(names)
    return {
        "images": images,
        "label_level": "HAM10000 dx" if dx_level else "class",
        "label_names": names,
        **headline,
        "intervals_95": {key: [value - 0.05, value + 0.05] for key, value in headline.items()},
        "per_class": {
            name: {"precision": 0.75, "recall": recall[name], "f1-score": 0.77, "support": per_label}
            for name in names
        },
        "roc_auc_one_vs_rest": {name: 0.9 for name in names},
        "confusion_matrix": [[0] * len(names) for _ in names],
        "reliability": [],
        "by_source": {
            "HAM10000": {
                "images": images,
                "accuracy": headline["accuracy"],
                "melanomas": 9,
                "melanoma_recall": 0.6,
            }
        },
        **figures,
    }


def colour_probe_figures(sensitivity: dict) -> dict:
    """A colour probe's rows: the given malignant sensitivity per saturation factor."""
    return {
        factor: {"malignant_sensitivity": value, "malignant_specificity": 0.7, "melanoma_vs_rest_auc": 0.8}
        for factor, value in sensitivity.items()
    }


def two_test_sets_metrics() -> dict:
    """Validation and both test sets; on each test set some floors of the project's bar are missed."""
    return {
        "val": subset_metrics(1313, accuracy=0.81),
        "frame_probe": None,
        "operating_point": {
            "malignant_threshold": 0.25,
            "chosen_on": "validation",
            "target_sensitivity": 0.85,
        },
        # isic9 Test: accuracy exactly at its floor (met), calibration error above its ceiling (missed).
        "test": subset_metrics(
            118,
            accuracy=0.60,
            expected_calibration_error=0.12,
            orientation_agreement=1.0,
            recall={"seborrheic keratosis": 0.0},
            colour_probe=colour_probe_figures({"1": 0.83, "0.75": 0.8, "0.5": 0.6}),
        ),
        # HAM10000 held-out test: accuracy below its floor (missed), calibration error within (met).
        "ham_test": subset_metrics(
            1414,
            dx_level=True,
            accuracy=0.70,
            expected_calibration_error=0.05,
            melanoma_vs_nevus_auc=0.9,
            orientation_agreement=0.999,
        ),
    }
