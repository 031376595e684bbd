"""Train the CNN: `python -m model.train [--quick] [--out-dir DIR]`.

Reads the rebalanced training set and the validation split of `data_prep`, trains with warm-up and
cosine decay, selects the epoch on validation balanced accuracy, fits a softmax temperature on
validation, then saves `model.h5`, the LiteRT export and `metadata.json` into one model folder.
The official Test split is not read here.

`--refit-of RUN_DIR` is the final fit: once validation has chosen a recipe (RUN_DIR, a trained
run), train that recipe again on train + validation for its whole schedule and keep the last epoch.
Its temperature, operating point and validation figures are RUN_DIR's, measured before the refit.

After the classifier, the image gate (`model.gate`) is retrained into the same folder (a few minutes;
`--skip-gate` or `--quick` keep the folder's previous gate, if any).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from model import config, data, network
from model.calibration import apply_temperature, expected_calibration_error, fit_temperature

log = logging.getLogger("model.train")


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved into the model's metadata."""

    # The defaults are the committed recipe (docs/EXPERIMENTS.md): 16 epochs on 80-px crops, then
    # 32 on 112-px crops, end inside max_minutes on 2 CPU cores.
    epochs: int = 48
    batch_size: int = 32
    width: int = 16
    dropout: float = 0.3
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    patience: int = 48  # the whole schedule: late epochs at full crop size still improve
    max_minutes: float = 45.0
    seed: int = config.SEED
    limit_per_class: int | None = None  # quick runs: at most this many training images per class
    # Train on random crop_size squares of the input (0: whole images); the saved model takes the
    # whole image at config.IMAGE_SIZE.
    crop_size: int = 112
    # Progressive resizing: the first small_crop_epochs epochs train on small_crop_size crops (at
    # the same scale), which cost about (small / crop_size)^2 of the time, so more epochs fit the
    # time budget; 0 turns it off. Patience counts from the first full-size epoch.
    small_crop_size: int = 80
    small_crop_epochs: int = 16
    # Multiplies the channels of the two low-resolution stages (model.network.build_model).
    deep_width_scale: float = 1.5
    # The final fit of a chosen recipe: the run folder whose configuration is trained again on
    # train + validation ("" : an ordinary run that selects its epoch on validation).
    refit_of: str = ""


QUICK = dict(
    epochs=2, small_crop_epochs=1, width=8, warmup_epochs=1, patience=2, max_minutes=5.0, limit_per_class=12
)


class TimeBudget(keras.callbacks.Callback):
    """Log the elapsed time each epoch and tell when one more epoch would overrun the budget."""

    def __init__(self, max_seconds: float):
        super().__init__()
        self.max_seconds = max_seconds
        self.started = self.last_epoch_end = time.monotonic()

    def out_of_time(self, logs: dict) -> bool:
        """Record logs["elapsed_s"]; True if another epoch as long as this one would overrun."""
        now = time.monotonic()
        logs["elapsed_s"] = now - self.started
        # The last epoch, not the mean: small-crop epochs are faster than the rest.
        epoch_seconds, self.last_epoch_end = now - self.last_epoch_end, now
        return logs["elapsed_s"] + epoch_seconds > self.max_seconds


class ValidationSelection(TimeBudget):
    """Score validation balanced accuracy each epoch, keep the best weights, stop on patience/time.

    Keras's EarlyStopping restores the best weights only when patience runs out, not when the epoch
    count or a time budget ends the run; this callback always ends on the best epoch.
    """

    def __init__(
        self, val_dataset, val_labels: np.ndarray, patience: int, max_seconds: float, patience_from: int = 0
    ):
        super().__init__(max_seconds)
        self.val_dataset, self.val_labels = val_dataset, val_labels
        self.patience = patience
        # Patience counts from this epoch on: the small-crop phase of progressive resizing scores
        # noisily on the full-size validation images and must not end the run.
        self.patience_from = patience_from
        self.best_score, self.best_epoch, self.best_weights = -1.0, -1, None

    def on_epoch_end(self, epoch, logs=None):
        # One pass over validation gives every validation figure (fit's validation_data would be a
        # second pass each epoch).
        probabilities = self.model.predict(self.val_dataset, verbose=0)
        predicted = probabilities.argmax(axis=1)
        score = balanced_accuracy_score(self.val_labels, predicted)
        true_class = probabilities[np.arange(len(self.val_labels)), self.val_labels]
        logs["val_loss"] = float(-np.mean(np.log(np.maximum(true_class, 1e-7))))
        logs["val_accuracy"] = float(np.mean(predicted == self.val_labels))
        logs["val_balanced_accuracy"] = score
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_weights = self.model.get_weights()
        out_of_patience = epoch - max(self.best_epoch, self.patience_from - 1) >= self.patience
        out_of_time = self.out_of_time(logs)
        if out_of_patience or out_of_time:
            log.info("stopping after epoch %d (%s)", epoch + 1, "patience" if out_of_patience else "time")
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class FinalFit(TimeBudget):
    """The refit's stand-in for ValidationSelection: keep the last epoch, stop inside the time budget.

    Nothing is selected, since the validation images are training data in a refit.
    """

    def __init__(self, max_seconds: float):
        super().__init__(max_seconds)
        self.best_score, self.best_epoch = None, -1

    def on_epoch_end(self, epoch, logs=None):
        self.best_epoch = epoch
        if self.out_of_time(logs):
            log.warning("stopping after epoch %d (time): the refit ends before its schedule", epoch + 1)
            self.model.stop_training = True


class CropSchedule(keras.callbacks.Callback):
    """Progressive resizing: set the training crop size (a tf.Variable the pipeline reads) per epoch."""

    def __init__(self, crop_size, small: int, full: int, small_epochs: int):
        super().__init__()
        self.crop_size, self.small, self.full, self.small_epochs = crop_size, small, full, small_epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.crop_size.assign(self.small if epoch < self.small_epochs else self.full)


@dataclass
class TrainResult:
    """A trained, calibrated model and what it took to make it."""

    model: keras.Model
    history: pd.DataFrame
    temperature: float
    calibration: dict
    best_epoch: int
    best_val_balanced_accuracy: float | None  # None for a refit (validation is training data)
    seconds: float
    images_per_second: float
    train_images: int
    selection_run: dict | None = None  # a refit's chosen run: its validation figures (refit_summary)
    # The count Augmentor topped the rare classes up to in this run's set (`data_prep rebalance
    # --target-per-class` may differ from config's); None if no class needed it.
    augmentor_floor: int | None = None


def train(settings: TrainConfig, work_dir: Path = config.WORK_DIR) -> TrainResult:
    """Train, select the epoch and fit the temperature on validation; return the calibrated model.

    A refit (settings.refit_of) trains on train + validation instead and takes its temperature
    from the chosen run.
    """
    selection_run = refit_summary(Path(settings.refit_of), work_dir) if settings.refit_of else None
    keras.utils.set_random_seed(settings.seed)
    training_set = data.read_training_set(work_dir)
    train_table = _limit(training_set, settings.limit_per_class, settings.seed)
    val_table = data.read_subset("val", work_dir)
    if selection_run:
        train_table = with_validation(train_table, val_table)
    train_labels, val_labels = data.label_indices(train_table.label), data.label_indices(val_table.label)
    # No loss weights: Augmentor's floor alone rebalances (weights per (source, class) cell lost on
    # validation, docs/EXPERIMENTS.md runs W0 and W1).
    crop_size = training_crop_size(settings)
    train_ds = training_dataset(train_table.path, train_labels, settings, crop_size)
    val_ds = data.make_dataset(val_table.path, val_labels, 64)

    model = training_model(settings)
    model.compile(
        optimizer=_optimizer(settings, len(train_table)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    max_seconds = settings.max_minutes * 60
    selection = (
        FinalFit(max_seconds)
        if selection_run
        else ValidationSelection(
            val_ds, val_labels, settings.patience, max_seconds, _small_crop_epochs(settings)
        )
    )
    started = time.monotonic()
    history = model.fit(
        train_ds,
        epochs=settings.epochs,
        callbacks=fit_callbacks(settings, selection, crop_size),
        verbose=2 if not sys.stdout.isatty() else "auto",
    )
    seconds = time.monotonic() - started
    epochs_run = len(history.history["loss"])
    if selection_run:
        temperature, calibration = selection_run["temperature"], selection_run["calibration"]
    else:
        # The temperature calibrates what is served: the logits averaged over the 8 orientations.
        logits = network.averaged_logits_model(model).predict(val_ds, verbose=0)
        temperature, calibration = calibrate(logits, val_labels)
    return TrainResult(
        model=network.with_temperature(model, temperature),
        history=pd.DataFrame(history.history).rename_axis("epoch").reset_index(),
        temperature=temperature,
        calibration=calibration,
        best_epoch=selection.best_epoch + 1,
        best_val_balanced_accuracy=None if selection.best_score is None else float(selection.best_score),
        seconds=seconds,
        images_per_second=epochs_run * len(train_table) / seconds,
        train_images=len(train_table),
        selection_run=selection_run,
        # Read from the whole rebalanced set: before a quick run's limit and a refit's validation rows.
        augmentor_floor=data.augmentor_floor(training_set),
    )


def with_validation(train_table: pd.DataFrame, val_table: pd.DataFrame) -> pd.DataFrame:
    """The rebalanced training set plus the validation images, as rows of the training manifest."""
    from data_prep.rebalance import original_rows  # the manifest's own row format

    return pd.concat([train_table, original_rows(val_table)], ignore_index=True)


def refit_summary(run_dir: Path, work_dir: Path = config.WORK_DIR) -> dict:
    """What a refit keeps of its chosen run: validation figures, operating point, frame probe, temperature.

    The figures are scored now, on validation only, with the chosen run's own model.
    """
    from model import evaluate
    from model.export import load_served_keras_model

    data.check_model_split(run_dir, work_dir)
    # The served prediction (8 orientations averaged), like every figure of model.evaluate.
    _, _, validation = evaluate.validation_results(load_served_keras_model(run_dir), work_dir)
    training = json.loads((run_dir / config.METADATA_FILE).read_text())["training"]
    return {
        "run": run_dir.name,
        "best_epoch": training["best_epoch"],
        "temperature": training["temperature"],
        "calibration": training["calibration"],
        **validation,
    }


def recipe_of(run_dir: Path) -> dict:
    """The TrainConfig fields of a trained run (what a refit of it trains again)."""
    metadata_path = Path(run_dir) / config.METADATA_FILE
    if not metadata_path.is_file():
        raise FileNotFoundError(f"{metadata_path} not found: --refit-of takes a trained run's folder")
    training = json.loads(metadata_path.read_text())["training"]
    if training.get("selection_run"):
        # Its "validation" figures would be measured on pictures it trained on.
        raise data.DataMismatch(
            f"{run_dir} is itself a refit (of run {training['selection_run']['run']}): --refit-of takes the "
            "run that was chosen on validation, not its final fit"
        )
    return {k: v for k, v in training.items() if k in TrainConfig.__dataclass_fields__}


def training_crop_size(settings: TrainConfig):
    """The crop size the pipeline reads: an int, or a tf.Variable when the crop grows during training."""
    if not _small_crop_epochs(settings):
        return settings.crop_size
    import tensorflow as tf

    return tf.Variable(settings.small_crop_size, dtype=tf.int32, trainable=False, name="crop_size")


def training_dataset(paths, labels: np.ndarray, settings: TrainConfig, crop_size=None):
    """The shuffled, augmented training pipeline of a configuration (crops, jitter)."""
    return data.make_dataset(
        paths,
        labels,
        settings.batch_size,
        training=True,
        seed=settings.seed,
        crop_size=settings.crop_size if crop_size is None else crop_size,
    )


def training_model(settings: TrainConfig) -> keras.Model:
    """The untrained network of a configuration; any input size when it trains on crops."""
    input_size = (None, None) if settings.crop_size else config.IMAGE_SIZE
    return network.build_model(
        input_size=input_size,
        width=settings.width,
        dropout=settings.dropout,
        deep_width_scale=settings.deep_width_scale,
    )


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> tuple[float, dict]:
    """Fit a softmax temperature on validation; keep it only if it lowers validation ECE."""
    fitted = fit_temperature(val_logits, val_labels)
    before = expected_calibration_error(apply_temperature(val_logits, 1.0), val_labels)
    after = expected_calibration_error(apply_temperature(val_logits, fitted), val_labels)
    temperature = fitted if after < before else 1.0
    return temperature, {
        "fitted_temperature": fitted,
        "val_ece_before": before,
        "val_ece_after": after,
        "applied": temperature != 1.0,
    }


def save_run(result: TrainResult, settings: TrainConfig, out_dir: Path, work_dir: Path) -> Path:
    """Save model.h5, history.csv, the training-curve plot, LiteRT export and metadata.json."""
    from model import export, plots  # TensorFlow-Lite conversion is only needed here

    out_dir.mkdir(parents=True, exist_ok=True)
    previous_gate = _gate_section(out_dir)
    result.model.save(out_dir / config.MODEL_H5_FILE)
    result.history.to_csv(out_dir / "history.csv", index=False)
    plots.training_curves(result.history, out_dir / "training_curves.png")
    export.export_litert(result.model, out_dir / config.MODEL_TFLITE_FILE)
    split_info = data.read_split_info(work_dir)
    metadata = export.build_metadata(
        training={
            **asdict(settings),
            "temperature": result.temperature,
            "calibration": result.calibration,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "best_val_balanced_accuracy": result.best_val_balanced_accuracy,
            "wall_seconds": round(result.seconds, 1),
            "images_per_second": round(result.images_per_second, 1),
            "train_images": result.train_images,
            "augmentor_floor": result.augmentor_floor,
            "selection_run": result.selection_run,
        },
        data={"split_content_hash": split_info["content_hash"], "split": split_info},
    )
    if previous_gate:
        # The image gate is its own file; it stays until `train_gate` replaces it (main, below).
        metadata[config.GATE_METADATA_KEY] = previous_gate
    export.write_metadata(metadata, out_dir)
    return out_dir


def _gate_section(model_dir: Path) -> dict | None:
    path = Path(model_dir) / config.METADATA_FILE
    if not (path.is_file() and (Path(model_dir) / config.GATE_TFLITE_FILE).is_file()):
        return None
    return json.loads(path.read_text()).get(config.GATE_METADATA_KEY)


def train_image_gate(out_dir: Path, work_dir: Path) -> None:
    """Retrain the image gate into the model folder (model.gate); without its data, keep the old one."""
    from model import gate

    try:
        section = gate.train_gate(out_dir, work_dir)
    except FileNotFoundError as exc:
        kept = "kept the previous gate" if _gate_section(out_dir) else "this folder has NO gate: not servable"
        print(f"warning: image gate not retrained ({exc}); {kept}", file=sys.stderr)
        return
    print(f"image gate retrained in {section['training']['seconds'] / 60:.1f} min")


def fit_callbacks(
    settings: TrainConfig, selection: TimeBudget, crop_size=None
) -> list[keras.callbacks.Callback]:
    """The callbacks of a run, in order: the crop schedule (if any), then the selection."""
    callbacks = []
    if crop_size is not None and not isinstance(crop_size, int):
        small_epochs = _small_crop_epochs(settings)
        callbacks.append(CropSchedule(crop_size, settings.small_crop_size, settings.crop_size, small_epochs))
    return [*callbacks, selection]


def _small_crop_epochs(settings: TrainConfig) -> int:
    # Progressive resizing needs a crop size to grow to and a smaller one to start from.
    if settings.small_crop_size and settings.crop_size:
        return settings.small_crop_epochs
    return 0


def _optimizer(settings: TrainConfig, train_images: int) -> keras.optimizers.AdamW:
    return keras.optimizers.AdamW(_schedule(settings, train_images), settings.weight_decay)


def _schedule(settings: TrainConfig, train_images: int) -> keras.optimizers.schedules.CosineDecay:
    steps_per_epoch = math.ceil(train_images / settings.batch_size)
    warmup = settings.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.learning_rate / 20,
        decay_steps=max(1, settings.epochs * steps_per_epoch - warmup),
        warmup_target=settings.learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )


def _limit(table: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    if per_class is None:
        return table
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label").head(per_class).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=config.WORK_DIR,
        help="data_prep output folder (env ISIC_WORK_DIR; default %(default)s)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help=f"model folder to write (default {config.MODEL_DIR}; with --quick, {config.QUICK_MODEL_DIR})",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (minutes, not a model)")
    parser.add_argument(
        "--skip-gate",
        action="store_true",
        help="do not retrain the image gate (model.gate) after the classifier",
    )
    for field, default in asdict(TrainConfig()).items():
        # The fields' meanings are the comments of TrainConfig; --help shows what the recipe uses.
        parser.add_argument(
            f"--{field.replace('_', '-')}",
            type=type(default) if default is not None else int,
            help=f"training configuration (model.train.TrainConfig); recipe: {default}",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None
    }
    try:
        # A refit trains its chosen run's recipe; options given on the command line still win.
        recipe = recipe_of(Path(args.refit_of)) if args.refit_of else {}
        settings = TrainConfig(**{**recipe, **(QUICK if args.quick else {}), **overrides})
        result = train(settings, args.work_dir)
    except (FileNotFoundError, data.DataMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or (config.QUICK_MODEL_DIR if args.quick else config.MODEL_DIR)
    out = save_run(result, settings, out_dir, args.work_dir)
    if not (args.quick or args.skip_gate):
        train_image_gate(out, args.work_dir)
    chosen = (
        f"refit of {settings.refit_of}, last epoch kept"
        if settings.refit_of
        else f"best epoch {result.best_epoch}, val balanced accuracy {result.best_val_balanced_accuracy:.3f}"
    )
    print(
        f"trained {len(result.history)} epochs in {result.seconds / 60:.1f} min "
        f"({result.images_per_second:.0f} img/s); {chosen}, T={result.temperature:.2f} -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
