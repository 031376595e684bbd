"""Evaluate the trained model: `python -m model.evaluate [--model-dir DIR]`.

Scores the validation split (where the malignant-vs-benign operating point is chosen) and the two
test sets side by side, the official isic9 Test split and the HAM10000 held-out test (reported,
never tuned on), writes the metrics into the model's metadata.json, the plots into
`<model-dir>/evaluation/`, and the model card `MODEL_CARD.md`. Every figure is of the served
prediction: the mean over the 8 orientations of the image (model.network.orientation_averaged).
When the folder holds an image gate, its held-out figures are measured too (`model.gate evaluate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
)

from model import config, data, plots
from model.calibration import expected_calibration_error, reliability_table
from model.preprocessing import load_image_files, scaled_saturation, to_model_input

MALIGNANT = [config.CLASS_NAMES.index(c) for c in config.RISK_GROUPS["malignant"]]
MELANOMA = config.CLASS_NAMES.index(config.MELANOMA)
NEVUS = config.CLASS_NAMES.index("nevus")
# HAM10000 labels are dx codes: the 9 outputs fold into the 7 codes by summing (akiec = actinic
# keratosis + squamous cell carcinoma, bkl = pigmented benign + seborrheic keratosis).
DX_FOLD = np.array(
    [[float(c in config.HAM_DX_TO_CLASSES[dx]) for dx in config.HAM_DX_CODES] for c in config.CLASS_NAMES]
)
# Screening favours sensitivity: the operating point is the highest threshold on the summed
# malignant probability that still finds this share of the malignant validation images.
TARGET_SENSITIVITY = 0.85
BOOTSTRAP_ROUNDS = 2000
# The frame probe pastes this share of the side, at every edge, from one image onto another.
FRAME_PROBE_WIDTH = 0.1
FRAME_PROBE_DONORS = {"archive": data.LATER_ARCHIVE_SOURCE, "control": data.HAM_SOURCE}
# The colour probe scales every picture's saturation by these factors: cameras, dermatoscopes and
# filters render colour more or less saturated, and the gate refuses only nearly colourless ones.
COLOUR_PROBE_SATURATIONS = (1.0, 0.75, 0.5)
PROBE_KEYS = ("malignant_sensitivity", "malignant_specificity", "melanoma_vs_rest_auc")


def predict_files(model, paths, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of the Keras model for image files, via the shared preprocessing."""
    images = load_image_files(paths)
    return model.predict(images, batch_size=batch_size, verbose=0)


def malignant_score(probabilities: np.ndarray) -> np.ndarray:
    """P(malignant) = the summed probability of the malignant risk group."""
    return probabilities[:, MALIGNANT].sum(axis=1)


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The highest malignant-score threshold with sensitivity >= TARGET_SENSITIVITY."""
    scores = np.sort(malignant_score(probabilities)[np.isin(labels, MALIGNANT)])
    if len(scores) == 0:
        return 0.5
    # Keep the top TARGET_SENSITIVITY share of malignant scores at or above the threshold.
    return float(scores[int(np.floor(len(scores) * (1 - TARGET_SENSITIVITY)))])


def headline_metrics(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float, dx_level: bool = False
) -> dict:
    """The figures that get bootstrap intervals: accuracy, balanced accuracy, AUCs, sens/spec, ECE.

    probabilities are the 9 class outputs; labels are class indices, or, with dx_level, indices
    into config.HAM_DX_CODES (accuracy, balanced accuracy and ECE are then over the folded codes).
    """
    names = config.HAM_DX_CODES if dx_level else config.CLASS_NAMES
    scored = probabilities @ DX_FOLD if dx_level else probabilities
    melanoma, nevus = (
        names.index("mel" if dx_level else config.MELANOMA),
        names.index("nv" if dx_level else "nevus"),
    )
    malignant, benign = _malignant_labels(names)
    predicted = scored.argmax(axis=1)
    is_malignant, is_benign = np.isin(labels, malignant), np.isin(labels, benign)
    flagged = malignant_score(probabilities) >= threshold
    mel_or_nevus = np.isin(labels, [melanoma, nevus])
    return {
        "accuracy": accuracy_score(labels, predicted),
        "balanced_accuracy": balanced_accuracy_score(labels, predicted),
        "melanoma_vs_rest_auc": _auc(labels == melanoma, probabilities[:, MELANOMA]),
        "melanoma_vs_nevus_auc": _auc(
            labels[mel_or_nevus] == melanoma, probabilities[mel_or_nevus, MELANOMA]
        ),
        "malignant_vs_benign_auc": _auc(
            is_malignant[is_malignant | is_benign], malignant_score(probabilities)[is_malignant | is_benign]
        ),
        "malignant_sensitivity": float(flagged[is_malignant].mean()) if is_malignant.any() else None,
        "malignant_specificity": float((~flagged[is_benign]).mean()) if is_benign.any() else None,
        "expected_calibration_error": expected_calibration_error(scored, labels),
    }


def _malignant_labels(names) -> tuple[list[int], list[int]]:
    """Label indices that are wholly malignant and wholly benign (akiec, half of each, is neither)."""
    groups = config.RISK_OF_CLASS
    classes = {n: config.HAM_DX_TO_CLASSES.get(n, (n,)) for n in names}
    malignant = [i for i, n in enumerate(names) if all(groups[c] == "malignant" for c in classes[n])]
    benign = [i for i, n in enumerate(names) if all(groups[c] == "benign" for c in classes[n])]
    return malignant, benign


def evaluate(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    seed: int = config.SEED,
    sources: np.ndarray | None = None,
    dx_level: bool = False,
) -> dict:
    """Every metric of the model card for one subset (with a per-source breakdown if sources are given).

    dx_level: labels index config.HAM_DX_CODES and per-class figures are over the folded outputs.
    """
    names = list(config.HAM_DX_CODES if dx_level else config.CLASS_NAMES)
    scored = probabilities @ DX_FOLD if dx_level else probabilities
    predicted = scored.argmax(axis=1)
    report = classification_report(
        labels, predicted, labels=range(len(names)), target_names=names, output_dict=True, zero_division=0
    )
    return {
        "images": int(len(labels)),
        "label_level": "HAM10000 dx" if dx_level else "class",
        "label_names": names,
        **headline_metrics(probabilities, labels, threshold, dx_level),
        "intervals_95": bootstrap_intervals(probabilities, labels, threshold, seed, dx_level=dx_level),
        "per_class": {name: report[name] for name in names},
        "roc_auc_one_vs_rest": {name: _auc(labels == i, scored[:, i]) for i, name in enumerate(names)},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(len(names))).tolist(),
        "reliability": reliability_table(scored, labels),
        "by_source": {} if sources is None else by_source(predicted, labels, sources, names),
    }


def orientation_agreement(model, images: np.ndarray, batch_size: int = 64) -> float:
    """Share of (image, view) pairs over the 7 other flips/rotations whose top class is the image's."""
    from model.network import dihedral

    upright = model.predict(images, batch_size=batch_size, verbose=0).argmax(axis=1)
    same = [
        model.predict(np.asarray(dihedral(images, view)), batch_size=batch_size, verbose=0).argmax(axis=1)
        == upright
        for view in range(1, 8)
    ]
    return float(np.mean(same))


def by_source(
    predicted: np.ndarray, labels: np.ndarray, sources: np.ndarray, names=config.CLASS_NAMES
) -> dict:
    """Accuracy and melanoma recall per acquisition source: where the source confound shows."""
    melanoma_label = list(names).index("mel" if "mel" in names else config.MELANOMA)
    table = {}
    for source in sorted(set(sources)):
        here = sources == source
        melanoma = here & (labels == melanoma_label)
        table[source] = {
            "images": int(here.sum()),
            "accuracy": float((predicted[here] == labels[here]).mean()),
            "melanomas": int(melanoma.sum()),
            "melanoma_recall": float((predicted[melanoma] == melanoma_label).mean())
            if melanoma.any()
            else None,
        }
    return table


def frame_probe(model, images: np.ndarray, labels: np.ndarray, sources: np.ndarray, seed: int = config.SEED):
    """How much the model reads the frame's border: HAM10000 images given other images' borders.

    Later-archive pictures carry rulers and ink marks at their edges, and in Train those ids are
    melanomas or seborrheic keratoses. A model that learned the border as a source cue calls a
    HAM10000 lesion "melanoma" once it wears a later-archive border; HAM10000 borders (the same
    seam, no change of source) are the control. The reverse, archive pictures given HAM10000
    borders ("archive_pictures"), tells how much of the model's accuracy on that source rests on
    its borders. Returns None without HAM10000 images.
    """
    ham = np.flatnonzero(sources == data.HAM_SOURCE)
    if len(ham) == 0:
        return None
    frame = _frame_mask(images.shape[1])
    rng = np.random.default_rng(seed)
    variants = {"own": images[ham]}
    for name, source in FRAME_PROBE_DONORS.items():
        donors = np.flatnonzero(sources == source)
        if len(donors):
            variants[f"{name}_borders"] = _reframed(images, ham, donors, frame, rng)
    result = {"images": int(len(ham)), "border_share": FRAME_PROBE_WIDTH}
    result.update(_probe_scores(model, variants, labels[ham]))
    archive = np.flatnonzero(sources != data.HAM_SOURCE)
    if len(archive):
        archive_variants = {
            "own": images[archive],
            "ham_borders": _reframed(images, archive, ham, frame, rng),
        }
        result["archive_pictures"] = {
            "images": int(len(archive)),
            **_probe_scores(model, archive_variants, labels[archive]),
        }
    return result


def _frame_mask(side: int) -> np.ndarray:
    # True on the outer FRAME_PROBE_WIDTH of the side, at every edge.
    border = int(round(side * FRAME_PROBE_WIDTH))
    frame = np.ones((side, side), dtype=bool)
    frame[border : side - border, border : side - border] = False
    return frame


def _reframed(images, recipients, donors, frame, rng) -> np.ndarray:
    # The recipients' centres inside the borders of randomly drawn donors.
    framed = images[recipients].copy()
    framed[:, frame] = images[rng.choice(donors, len(recipients))][:, frame]
    return framed


def _probe_scores(model, variants: dict, labels: np.ndarray) -> dict:
    scores = {}
    for name, batch in variants.items():
        predicted = model.predict(batch, batch_size=64, verbose=0).argmax(axis=1)
        scores[name] = {
            "accuracy": float((predicted == labels).mean()),
            "called_melanoma": float((predicted == MELANOMA).mean()),
        }
    return scores


def colour_probe(model, images, labels, threshold: float, dx_level: bool = False, clean=None) -> dict:
    """The malignant flag and melanoma AUC with every picture's colour saturation scaled down.

    The model reads colour, and a faded photo (a filter, an old camera, another dermatoscope)
    can move its answer toward benign; the operating point stays the one chosen on clean pictures.
    clean: the model's probabilities for the unchanged images, when already predicted.
    """
    result = {}
    for factor in COLOUR_PROBE_SATURATIONS:
        if factor == 1.0 and clean is not None:
            probabilities = clean
        else:
            probabilities = model.predict(scaled_saturation(images, factor), batch_size=64, verbose=0)
        metrics = headline_metrics(probabilities, labels, threshold, dx_level)
        result[f"{factor:g}"] = {key: metrics[key] for key in PROBE_KEYS}
    return result


def field_of_view_probe(model, paths, labels, threshold: float, dx_level: bool = False) -> dict:
    """The malignant flag and melanoma AUC with every picture seen through a round dermatoscope field.

    A clip-on phone dermatoscope shows the lesion inside a round field with black around it; what
    this probe shows is why the gate refuses such photos (runs G18, CF). The operating point stays
    the one chosen on clean pictures.
    """
    from model.gate import FIELD_OF_VIEW_VERSIONS, as_upload, read_upload

    originals = [read_upload(path) for path in paths]
    result = {}
    for name, version in FIELD_OF_VIEW_VERSIONS.items():
        images = np.stack([to_model_input(as_upload(version(image))) for image in originals])
        metrics = headline_metrics(
            model.predict(images, batch_size=64, verbose=0), labels, threshold, dx_level
        )
        result[name] = {key: metrics[key] for key in PROBE_KEYS}
    return result


def validation_frame_probe(model, work_dir: Path) -> dict | None:
    """`frame_probe` on the validation split (recipients and donors are all validation images)."""
    table = data.read_subset("val", work_dir)
    images = load_image_files(table.path)
    sources = data.image_sources(table, work_dir).to_numpy()
    return frame_probe(model, images, data.label_indices(table.label), sources)


def bootstrap_intervals(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    dx_level: bool = False,
) -> dict:
    """Percentile 95% intervals of the headline metrics over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        metrics = headline_metrics(probabilities[pick], labels[pick], threshold, dx_level)
        for name, value in metrics.items():
            if value is not None and not np.isnan(value):
                samples.setdefault(name, []).append(value)
    return {
        name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for name, v in samples.items()
    }


def evaluate_model(model_dir: Path = config.MODEL_DIR, work_dir: Path = config.WORK_DIR) -> dict:
    """Score validation and Test, write plots, metrics (into metadata.json) and the model card.

    A refit trained on validation, so its validation figures, operating point and frame probe are
    those of its chosen run (measured before the refit), and only Test is scored here.
    """
    from model.export import load_served_keras_model  # TensorFlow only when a model is really evaluated
    from model.model_card import write_model_card

    model_dir = Path(model_dir)
    data.check_model_split(model_dir, work_dir)
    model = load_served_keras_model(model_dir)
    metadata_path = model_dir / config.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    if config.GATE_METADATA_KEY in metadata:
        from model.gate import check_held_out_data

        check_held_out_data()  # not after the metrics are written: the folder would be half updated
    selection_run = metadata["training"].get("selection_run")
    if selection_run:
        results = {key: selection_run[key] for key in ("val", "frame_probe", "operating_point")}
    else:
        probabilities, labels, results = validation_results(model, work_dir)
        _plot("val", probabilities, labels, results["val"], model_dir / "evaluation")
    threshold = results["operating_point"]["malignant_threshold"]
    for subset in config.TEST_SUBSETS:
        if data.read_subset(subset, work_dir).empty:
            continue  # a split made without HAM10000 images has no HAM10000 held-out test
        probabilities, labels, results[subset], _ = score_subset(model, subset, work_dir, threshold)
        results[subset]["orientation_agreement"] = orientation_agreement(
            model, load_image_files(data.read_subset(subset, work_dir).path)
        )
        _plot(subset, probabilities, labels, results[subset], model_dir / "evaluation")
    metadata["metrics"] = results
    metadata_path.write_text(json.dumps(metadata, indent=2))
    if config.GATE_METADATA_KEY in metadata:
        from model.gate import evaluate_gate

        metadata[config.GATE_METADATA_KEY]["figures"] = evaluate_gate(model_dir, work_dir)
    audit_path = Path(work_dir) / config.AUDIT_MD_FILE
    write_model_card(metadata, model_dir, audit_path.read_text() if audit_path.is_file() else "")
    return results


def validation_results(model, work_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Validation metrics, frame probe and the operating point chosen there (with the predictions)."""
    probabilities, labels, metrics, threshold = score_subset(model, "val", work_dir)
    return (
        probabilities,
        labels,
        {
            "val": metrics,
            "frame_probe": validation_frame_probe(model, work_dir),
            "operating_point": {
                "malignant_threshold": threshold,
                "chosen_on": "validation",
                "target_sensitivity": TARGET_SENSITIVITY,
            },
        },
    )


def score_subset(model, subset: str, work_dir: Path, threshold: float | None = None) -> tuple:
    """Predict one subset and evaluate it: (probabilities, labels, metrics, threshold).

    Without a threshold, the operating point is chosen on this subset (validation only).
    """
    table = data.read_subset(subset, work_dir)
    dx_level = subset == "ham_test"
    labels = dx_indices(table.dx) if dx_level else data.label_indices(table.label)
    images = load_image_files(table.path)
    probabilities = model.predict(images, batch_size=64, verbose=0)
    if threshold is None:
        threshold = choose_threshold(probabilities, labels)
    sources = data.image_sources(table, work_dir).to_numpy()
    metrics = evaluate(probabilities, labels, threshold, sources=sources, dx_level=dx_level)
    metrics["colour_probe"] = colour_probe(model, images, labels, threshold, dx_level, probabilities)
    metrics["field_of_view_probe"] = field_of_view_probe(model, table.path, labels, threshold, dx_level)
    return probabilities, labels, metrics, threshold


def dx_indices(dx) -> np.ndarray:
    """HAM10000 dx codes -> integer indices in config.HAM_DX_CODES order."""
    return np.array([config.HAM_DX_CODES.index(code) for code in dx], dtype=np.int32)


def _plot(subset: str, probabilities: np.ndarray, labels: np.ndarray, metrics: dict, out: Path) -> None:
    name = {"val": "validation", **config.TEST_SUBSETS}[subset]
    names = metrics["label_names"]
    scored = probabilities @ DX_FOLD if subset == "ham_test" else probabilities
    plots.confusion_matrix(
        labels,
        scored.argmax(axis=1),
        out / f"confusion_{subset}.png",
        f"Confusion matrix, {name} ({len(labels)} images)",
        names,
    )
    plots.roc_curves(labels, scored, out / f"roc_{subset}.png", f"One-vs-rest ROC, {name}", names)
    plots.reliability_diagram(
        metrics["reliability"],
        out / f"reliability_{subset}.png",
        f"Reliability, {name} (ECE {metrics['expected_calibration_error']:.3f})",
    )


def _auc(positives: np.ndarray, scores: np.ndarray) -> float | None:
    if positives.all() or not positives.any():
        return None  # undefined with one class only
    return float(roc_auc_score(positives, scores))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: evaluate and print the headline figures."""
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR)
    parser.add_argument("--work-dir", type=Path, default=config.WORK_DIR)
    parser.add_argument(
        "--validation-only",
        action="store_true",
        help="score validation only and write nothing: for comparing runs without touching Test",
    )
    args = parser.parse_args(argv)
    try:
        if args.validation_only:
            return _print_validation(args.model_dir, args.work_dir)
        results = evaluate_model(args.model_dir, args.work_dir)
    except (FileNotFoundError, data.DataMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(results_table(results))
    print("\n".join(probe_lines(results)))
    gate = json.loads((args.model_dir / config.METADATA_FILE).read_text()).get(config.GATE_METADATA_KEY)
    if gate:
        from model.gate import figure_lines

        print("\nimage gate (held-out figures of issue 19):")
        print("\n".join(figure_lines(gate["figures"])))
    return 0


HEADLINE_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "melanoma_vs_rest_auc",
    "melanoma_vs_nevus_auc",
    "malignant_sensitivity",
    "malignant_specificity",
    "expected_calibration_error",
    "orientation_agreement",
)


def results_table(results: dict) -> str:
    """Validation and both test sets side by side, each test figure with its 95% interval."""
    subsets = [s for s in ("val", *config.TEST_SUBSETS) if s in results]
    lines = [f"{'metric':<28}" + "".join(f"{s:>24}" for s in subsets)]
    for key in HEADLINE_KEYS:
        cells = []
        for subset in subsets:
            ci = results[subset].get("intervals_95", {}).get(key) if subset != "val" else None
            text = _fmt(results[subset].get(key)) + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")
            cells.append(f"{text:>24}")
        lines.append(f"{key:<28}" + "".join(cells))
    return "\n".join(lines)


def probe_lines(results: dict) -> list[str]:
    """The colour and field-of-view probes of each scored subset, a line per version of the pictures."""
    lines = []
    for subset, metrics in results.items():
        versions = {
            f"colour x{factor}": row for factor, row in (metrics or {}).get("colour_probe", {}).items()
        }
        versions |= (metrics or {}).get("field_of_view_probe", {})
        for version, row in versions.items():
            figures = "  ".join(f"{key} {_fmt(row[key])}" for key in PROBE_KEYS)
            lines.append(f"{version:<18} {subset:<9} {figures}")
    return lines


def _print_validation(model_dir: Path, work_dir: Path) -> int:
    from model.export import load_served_keras_model

    data.check_model_split(model_dir, work_dir)
    training = json.loads((Path(model_dir) / config.METADATA_FILE).read_text()).get("training", {})
    if training.get("selection_run"):
        print(
            f"error: {model_dir} is a final fit on train + validation (refit of "
            f"{training['selection_run']['run']}), so its validation figures would be measured on its "
            "training data; the chosen run's are in metadata.json under training.selection_run",
            file=sys.stderr,
        )
        return 2
    model = load_served_keras_model(Path(model_dir))
    _, _, metrics, _ = score_subset(model, "val", work_dir)
    for key in HEADLINE_KEYS[:-1]:
        print(f"{key:<28}{_fmt(metrics[key]):>8}")
    for name in config.CLASS_NAMES:
        print(f"recall {name:<36}{_fmt(metrics['per_class'][name]['recall']):>8}")
    for source, row in metrics["by_source"].items():
        recall = _fmt(row["melanoma_recall"])
        print(f"{source:<28} accuracy {_fmt(row['accuracy'])}  melanoma recall {recall}")
    print("\n".join(probe_lines({"val": metrics})))
    probe = validation_frame_probe(model, work_dir) or {}
    for pictures, rows in (("HAM10000", probe), ("archive", probe.get("archive_pictures", {}))):
        for name, row in rows.items():
            if isinstance(row, dict) and "accuracy" in row:
                print(
                    f"frame probe, {pictures + ' with ' + name:<30} accuracy {_fmt(row['accuracy'])}"
                    f"  called melanoma {_fmt(row['called_melanoma'])}"
                )
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
