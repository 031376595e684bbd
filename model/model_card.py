"""The model card: one Markdown page with what the model is for, its data, results and limits."""

from __future__ import annotations

from pathlib import Path

from model import config

INTENDED_USE = """\
Education and research: showing students, clinicians and engineers what a small from-scratch CNN
sees in a dermoscopic image of a skin lesion, with per-class probabilities and a heat map. It is not
a medical device and not a diagnosis. Anyone worried about a skin lesion should see a doctor,
whatever this model says, and especially for a lesion that is new, changing, bleeding or itching."""

CONFOUNDING = """\
In this dataset the class is confounded with the image's source. Melanoma, nevus and seborrheic
keratosis come from the ISIC Archive (no HAM10000 record), every other class from HAM10000, and
the archives differ in camera, dermatoscope and colour. Inside the archive it goes further: in
Train, the lowest ISIC ids (below 1000) hold melanomas and nevi, the later ids melanomas and
seborrheic keratoses and no nevi, so an "early-id look" predicts nevus. A network can score well
by learning the source instead of the lesion."""

CONFOUNDING_REMAINS = """\
What remains: texture, resolution and JPEG history still differ between archives, and the
official Test split shares the same confound (its melanoma and nevus images are also archive
images), so the Test figures cannot show how the model does on images from a third source. The
per-source table under Results shows where it still bites. Expect worse results on phone photos
and on dermatoscopes the model has never seen."""


def confounding_text(training: dict) -> str:
    """The source-confounding section: the confound, what this model's training did, what remains."""
    measures = [
        "shades-of-grey colour constancy (p=6) as the model's first layer, which divides out each "
        "image's colour cast",
        "training-time brightness, contrast and per-channel gain jitter, so exposure and cast are "
        "unreliable cues",
        "rotations and zooms (Augmentor, offline) and random flips and transposes (online), so "
        "orientation and framing carry no class information",
    ]
    if training.get("crop_size"):
        measures.append(
            f"random {training['crop_size']}-pixel crops of the {config.IMAGE_SIZE[0]}-pixel input, "
            "which move the lesion in the frame and cut off the borders where vignetting and rulers sit"
        )
    if training.get("weighting") == "source":
        measures.append(
            "loss weights that make every (source, class) cell weigh the same, so that within a "
            "source the classes it holds are equally likely and the source stops predicting the class"
        )
    if training.get("vignette"):
        measures.append(
            f"a random dark dermatoscope vignette on {training['vignette']:.0%} of training images "
            "of every class: many archive pictures show the round field stop and no HAM10000 picture "
            'does, so without it a vignette says "melanoma, nevus or seborrheic keratosis"'
        )
    if training.get("resolution"):
        measures.append(
            f"resolution jitter: {training['resolution']:.0%} of training images resampled through "
            "a random lower resolution, so sharpness and fine texture, which differ with each "
            "archive's cameras and resizing, stop being cues"
        )
    if training.get("frame_swap"):
        measures.append(
            f"frame swaps: {training['frame_swap']:.0%} of training images get the border of another "
            "image of their batch, so the rulers, ink marks and scale bars at "
            "the frame's edge, which differ between archives, stop predicting the class"
        )
    if training.get("cutmix"):
        measures.append(
            f"CutMix (Yun et al. 2019) on {training['cutmix']:.0%} of training images: a box of "
            "another image of the batch pasted in, the target mixed by area, so lesions sit beside "
            "other sources' skin and borders and every part of the frame has to earn its weight"
        )
    if training.get("mixstyle"):
        measures.append(
            f"MixStyle (Zhou et al. 2021) after the first two blocks (probability "
            f"{training['mixstyle']}): in training, each image's early feature statistics, which "
            "carry camera and lighting style, are partly swapped with another image's of the batch"
        )
    listed = "; ".join(f"({i}) {m}" for i, m in enumerate(measures, 1))
    return f"{CONFOUNDING}\n\nWhat we did against it: {listed}.\n\n{CONFOUNDING_REMAINS}"


# The project's bar for a committed model, on the official Test split (issue 3).
TEST_FLOORS = {"accuracy": 0.55, "balanced_accuracy": 0.50, "melanoma_vs_rest_auc": 0.80}

LIMITATIONS = """\
- 118 Test images (3 each for seborrheic keratosis and vascular lesion): every figure is noisy; read
  the 95% bootstrap intervals, not the point values.
- 18 Test images also sit in Train under another label (the dataset's own defect); they were removed
  from training, and Test keeps its official labels, so some Test labels are themselves disputed.
- Trained on 180x180 dermoscopic images of mostly light skin; clinical (non-dermoscopic) photos,
  darker skin types and lesion types outside the nine classes are out of scope.
- The classifier itself always answers with one of nine classes; the image gate in front of it
  refuses pictures that are not lesions, ordinary phone photos and unusable pictures, but it is a
  small network and can let an odd picture through or, rarely, refuse a real dermoscopic image
  (its held-out figures are under "Image gate")."""

# The image gate's figures (model.gate), in the order shown, with plain names.
GATE_FIGURES = {
    "non_lesion_refused": "non-lesion photos of held-out classes + generated non-lesion images refused",
    "everyday_refused": "of which: everyday photos of the two held-out Imagenette classes",
    "generated_refused": "of which: generated pictures (text, screenshots, colours, gradients, noise)",
    "smartphone_refused": "held-out smartphone photos of lesions (PAD-UFES-20 patients) refused",
    "smartphone_not_dermoscopic": "of which answered not_dermoscopic",
    "dermoscopy_refused_test": "isic9 Test dermoscopic images refused",
    "melanomas_refused_test": "isic9 Test melanomas refused",
    "dermoscopy_refused_ham_test": "HAM10000 held-out test images refused",
    "melanomas_refused_ham_test": "HAM10000 held-out test melanomas refused",
    "unusable_caught": "synthetic unusable versions of Test images "
    "(blur 8, brightness x0.1 / x4, 48 px, flat) caught",
    "clean_flagged_poor_quality": "clean Test images flagged poor_quality",
}


def limitation_lines() -> list[str]:
    """The limitations as plain sentences (for the web app's About page)."""
    items = LIMITATIONS.replace("\n  ", " ").split("\n- ")
    return [item.lstrip("- ").strip() for item in items]


def gate_rows(figures: dict) -> list[dict]:
    """The gate's held-out figures as rows: what, result, goal ("" if none) and whether it is met."""
    rows = []
    for name, label in GATE_FIGURES.items():
        figure = figures.get(name)
        if not figure:
            continue
        if "refused" in figure:
            result = f"{figure['refused']} of {figure['images']}"
        else:
            result = f"{figure['share']:.1%} ({figure['count']} of {figure['images']})"
        goal = figures.get("goals", {}).get(name)
        rows.append(
            {
                "figure": label,
                "result": result,
                "goal": goal["goal"] if goal else "",
                "met": ("met" if goal["met"] else "NOT met") if goal else "",
            }
        )
    return rows


def gate_text(gate: dict) -> str:
    """The model card's section on the image gate: what it is, how it was chosen, held-out figures."""
    thresholds = gate["thresholds"]
    size = "x".join(str(s) for s in gate["input"]["size"])
    held_out = ", ".join(gate["training"].get("held_out_everyday_classes", []))
    quality = _quality_text(thresholds["quality"])
    lesion = thresholds["lesion_probability"]
    text = (
        "Before the classifier, every upload passes a gate (`python -m model.gate`): image statistics "
        f"(too small, too dark, overexposed, flat, blurred; thresholds {quality}) and a small "
        f"from-scratch CNN (input {size}, file `{gate['files']['litert']}`, classes "
        f"{', '.join(gate['classes'])}) that refuses when P(lesion) < {lesion:.4f}. Both thresholds were "
        "chosen on validation only. Trained on data_prep's train subset of the dermoscopy (its val "
        f"subset for validation), Imagenette everyday photos (classes {held_out} held out entirely), "
        "the PAD-UFES-20 smartphone photos of a third of the patients (another third for validation), "
        "generated pictures, and blurred or JPEG-damaged copies of the training lesions. The figures "
        "below come from the held-out parts: the official Test split, the HAM10000 held-out test when "
        "data_prep defines it, the held-out classes and patients, and generated pictures from their own "
        "seed. A refusal is HTTP 422 with code not_a_lesion, not_dermoscopic or poor_quality, and its "
        "message says it is no reassurance."
    )
    rows = gate_rows(gate.get("figures", {}))
    if not rows:
        return text + "\n\nNot evaluated yet (`python -m model.gate evaluate`)."
    table = ["| figure | held-out result | goal | |", "|---|---|---|---|"]
    table += [f"| {r['figure']} | {r['result']} | {r['goal']} | {r['met']} |" for r in rows]
    by_version = gate["figures"].get("unusable_caught_by_version", {})
    versions = ", ".join(f"{name} {v['share']:.1%}" for name, v in by_version.items())
    return f"{text}\n\n" + "\n".join(table) + (f"\n\nCaught by version: {versions}." if versions else "")


def _quality_text(quality: dict) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in quality.items())


def write_model_card(metadata: dict, model_dir: Path, audit_markdown: str) -> Path:
    """Render MODEL_CARD.md into model_dir from the metadata (with metrics) and the data audit."""
    path = Path(model_dir) / "MODEL_CARD.md"
    path.write_text(render(metadata, audit_markdown))
    return path


def render(metadata: dict, audit_markdown: str) -> str:
    """The model card as Markdown."""
    training, metrics = metadata["training"], metadata["metrics"]
    split = metadata["data"]["split"]
    sections = [
        f"# Model card: {metadata['name']} {metadata['version']}",
        "## Intended use\n\n" + INTENDED_USE,
        "## Model\n\n" + _model_text(metadata),
        "## Training data\n\n" + _data_text(split, metadata["data"]["split_content_hash"]),
        "### Data audit\n\n" + audit_markdown.replace("# Data audit", "").strip(),
        "## Training\n\n" + _training_text(training),
        "## Source confounding\n\n" + confounding_text(training),
        "## Results\n\n" + _results_text(metrics, training.get("selection_run")),
        *(
            [f"## Image gate\n\n{gate_text(metadata[config.GATE_METADATA_KEY])}"]
            if config.GATE_METADATA_KEY in metadata
            else []
        ),
        "## Limitations\n\n" + LIMITATIONS,
    ]
    return "\n\n".join(sections) + "\n"


def _model_text(metadata: dict) -> str:
    size = "x".join(str(s) for s in metadata["input"]["size"])
    class_map = "x".join(str(s) for s in metadata["outputs"]["class_maps"][:2])
    return (
        f"A from-scratch CNN (Conv2D / BatchNorm / MaxPool / Dropout, no pretrained weights), input "
        f"{size} RGB, {len(metadata['class_names'])} classes. Preprocessing: "
        f"{metadata['input']['preprocessing']}. Files: `{config.MODEL_H5_FILE}` (Keras) and "
        f"`{config.MODEL_TFLITE_FILE}` (LiteRT, served by the web app; its second output is the "
        f"{class_map} class activation map used for the heat map)."
    )


def _data_text(split: dict, content_hash: str) -> str:
    counts = split["counts"]
    header = "| subset | " + " | ".join(config.CLASS_NAMES) + " | total |"
    rows = [header, "|---|" + "---|" * (config.NUM_CLASSES + 1)]
    for subset in ("train", "val", "test"):
        cells = [str(counts.get(subset, {}).get(c, 0)) for c in config.CLASS_NAMES]
        rows.append(f"| {subset} | " + " | ".join(cells) + f" | {sum(counts.get(subset, {}).values())} |")
    dropped = ", ".join(f"{n} {why}" for why, n in split["dropped"].items())
    return (
        "The Kaggle 'Skin cancer ISIC The International Skin Imaging Collaboration' set (ISIC Archive "
        "and HAM10000, CC BY-NC). The official Test split is kept whole for reporting; train and "
        "validation are carved from Train, stratified by class and grouped by HAM10000 lesion. "
        f"Dropped from Train: {dropped}. Label conflicts: {split['resolutions']} (policy in "
        "`data_prep/split.py`). The training subset was topped up to "
        f"{config.REBALANCE_TARGET_PER_CLASS} images per class with Augmentor. Split content hash "
        f"`{content_hash[:16]}`.\n\n" + "\n".join(rows)
    )


def _training_text(training: dict) -> str:
    return (
        f"{_epochs_text(training)}, batch {training['batch_size']}, "
        f"AdamW lr {training['learning_rate']} with {training['warmup_epochs']}-epoch warm-up and cosine "
        f"decay, width {training['width']}{_deep_width_text(training)}, seed {training['seed']}."
        f"{_ema_text(training)}{_smoothing_text(training)} "
        f"{_weighting_text(training)} Wall time "
        f"{training['wall_seconds'] / 60:.1f} min on {training.get('machine', 'a 2-core CPU')} "
        f"({training['images_per_second']:.0f} training images/s). {_calibration_text(training)} "
        "Curves: `training_curves.png`."
    )


def _epochs_text(training: dict) -> str:
    selection_run = training.get("selection_run")
    if not selection_run:
        return (
            f"{training['epochs_run']} epochs (best: {training['best_epoch']}, selected on validation "
            f"balanced accuracy {training['best_val_balanced_accuracy']:.3f})"
        )
    run = selection_run["run"]
    return (
        f"A final fit: run {run}'s recipe, chosen on validation, trained again on train + validation "
        f"({training['train_images']} images) for {training['epochs_run']} epochs (its whole schedule; "
        f"run {run}'s best epoch was {selection_run['best_epoch']}; the last epoch is kept, since "
        "nothing is held out to select on)"
    )


def _deep_width_text(training: dict) -> str:
    scale = training.get("deep_width_scale", 1.0)
    return "" if scale == 1.0 else f" (x{scale} in the two low-resolution stages)"


def _ema_text(training: dict) -> str:
    if not training.get("ema"):
        return ""
    return f" The saved weights are a moving average of the training steps (EMA momentum {training['ema']})."


def _smoothing_text(training: dict) -> str:
    smoothing = training.get("label_smoothing", 0.0)
    if not smoothing:
        return ""
    return f" Label smoothing {smoothing}: each target spreads that share evenly over the classes."


def _weighting_text(training: dict) -> str:
    weighting = {
        "class": "Loss weights: every class weighs the same.",
        "source": "Loss weights: every (acquisition source, class) cell weighs the same (see above).",
    }.get(training.get("weighting", "class"), "")
    crop = training.get("crop_size", 0)
    crops = f" Trained on random {crop}x{crop} crops; served on the whole image." if crop else ""
    small, small_epochs = training.get("small_crop_size", 0), training.get("small_crop_epochs", 0)
    if crop and small and small_epochs:
        crops += (
            f" Progressive resizing: the first {small_epochs} epochs used {small}x{small} crops "
            f"(same scale, {(small / crop) ** 2:.0%} of the pixels, so faster epochs), "
            f"the rest {crop}x{crop}."
        )
    return weighting + crops


def _calibration_text(training: dict) -> str:
    calibration = training.get("calibration")
    if training.get("selection_run"):
        run = training["selection_run"]["run"]
        return f"Softmax temperature T={training['temperature']:.2f}, run {run}'s (fitted on validation)."
    if not calibration:
        return f"Softmax temperature {training['temperature']:.2f}, fitted on validation."
    verdict = "applied" if calibration["applied"] else "not applied (it did not lower validation ECE)"
    return (
        f"Temperature scaling fitted on validation: T={calibration['fitted_temperature']:.2f}, validation "
        f"ECE {calibration['val_ece_before']:.3f} before, {calibration['val_ece_after']:.3f} after; "
        f"{verdict}."
    )


def _results_text(metrics: dict, selection_run: dict | None = None) -> str:
    if not metrics:
        return "Not evaluated yet: run `python -m model.evaluate`."
    val, test = metrics["val"], metrics["test"]
    # A refit trained on validation: its validation figures are its chosen run's, before the refit.
    val_name = f"validation (run {selection_run['run']})" if selection_run else "validation"
    keys = [
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("melanoma_vs_rest_auc", "melanoma-vs-rest ROC AUC"),
        ("malignant_vs_benign_auc", "malignant-vs-benign ROC AUC"),
        ("malignant_sensitivity", "malignant sensitivity at the operating point"),
        ("malignant_specificity", "malignant specificity at the operating point"),
        ("expected_calibration_error", "expected calibration error"),
    ]
    rows = [f"| metric | {val_name} | official Test | Test 95% CI |", "|---|---|---|---|"]
    for key, name in keys:
        ci = test["intervals_95"].get(key)
        ci_text = f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else ""
        rows.append(f"| {name} | {_fmt(val[key])} | {_fmt(test[key])} | {ci_text} |")
    per_class = ["| class | precision | recall | F1 | support | ROC AUC |", "|---|---|---|---|---|---|"]
    for name in config.CLASS_NAMES:
        r = test["per_class"][name]
        per_class.append(
            f"| {name} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1-score']:.2f} | "
            f"{int(r['support'])} | {_fmt(test['roc_auc_one_vs_rest'][name])} |"
        )
    threshold = metrics["operating_point"]["malignant_threshold"]
    bar = ["| floor on official Test | required | measured | met |", "|---|---|---|---|"]
    for key, floor in TEST_FLOORS.items():
        met = test[key] is not None and test[key] >= floor
        bar.append(
            f"| {key.replace('_', ' ')} | {floor:.2f} | {_fmt(test[key])} | {'yes' if met else '**no**'} |"
        )
    return (
        "The project's bar for a committed model, on the official Test split:\n\n"
        + "\n".join(bar)
        + "\n\n"
        + (
            f"Operating point: a lesion is flagged malignant when P(melanoma) + P(basal cell carcinoma) + "
            f"P(squamous cell carcinoma) >= {threshold:.3f}, the highest threshold that keeps "
            f"{val_name} sensitivity >= {metrics['operating_point']['target_sensitivity']:.2f}.\n\n"
            + "\n".join(rows)
            + "\n\nPer class, official Test:\n\n"
            + "\n".join(per_class)
            + _by_source_text(val, test, val_name)
            + _frame_probe_text(metrics.get("frame_probe"), val_name)
            + "\n\nPlots: `evaluation/confusion_test.png`, `evaluation/roc_test.png`, "
            f"`evaluation/reliability_test.png`{'' if selection_run else ' (and `_val` versions)'}, "
            "`training_curves.png`.\n\n"
            "![Confusion matrix](evaluation/confusion_test.png)\n![ROC](evaluation/roc_test.png)\n"
            "![Reliability](evaluation/reliability_test.png)\n![Training curves](training_curves.png)"
        )
    )


def _by_source_text(val: dict, test: dict, val_name: str = "validation") -> str:
    if not val.get("by_source") or not test.get("by_source"):
        return ""
    rows = [
        "| source | subset | images | accuracy | melanomas | melanoma recall |",
        "|---|---|---|---|---|---|",
    ]
    for subset, metrics in ((val_name, val), ("official Test", test)):
        for source, r in metrics["by_source"].items():
            rows.append(
                f"| {source} | {subset} | {r['images']} | {r['accuracy']:.2f} | {r['melanomas']} | "
                f"{_fmt(r['melanoma_recall'])} |"
            )
    return "\n\nBy acquisition source (where the source confound shows):\n\n" + "\n".join(rows)


def _frame_probe_text(probe: dict | None, val_name: str = "validation") -> str:
    if not probe:
        return ""
    rows = ["| HAM10000 validation images with | accuracy | called melanoma |", "|---|---|---|"]
    names = {
        "own": "their own border",
        "archive_borders": "borders of later-archive images",
        "control_borders": "borders of other HAM10000 images (control)",
    }
    for key, name in names.items():
        if key in probe:
            row = probe[key]
            rows.append(f"| {name} | {_fmt(row['accuracy'])} | {_fmt(row['called_melanoma'])} |")
    return (
        f"\n\nFrame probe (`model.evaluate.frame_probe`{_unless_plain(val_name)}): "
        f"the outer {probe['border_share']:.0%} of the {probe['images']} HAM10000 validation images "
        "replaced by another validation image's. A gap "
        "between the archive and the "
        "control rows is the source cue the border carries; a drop in both is fragility to the seam.\n\n"
        + "\n".join(rows)
    )


def _unless_plain(val_name: str) -> str:
    return "" if val_name == "validation" else f", {val_name}"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
