"""Test-time augmentation probe, validation only: `python scripts/tta_probe.py runs/A runs/B ...`.

Scores each saved run on the validation split three ways: its one plain view of the whole image (what
the model card reports), the mean probability over the 8 flips / transposes (d8), and over those 8 of
five crops of the run's training crop size (d8x5, the views training draws). Prints one line per
run and the paired mean changes. Runs whose input size differs from `config.IMAGE_SIZE` are skipped.
Never touches Test.
(README, "Test-time augmentation": not adopted.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from model import config, data, network
from model.evaluate import choose_threshold, headline_metrics
from model.export import load_keras_model
from model.model_card import TEST_FLOORS as FLOORS
from model.preprocessing import load_image_files
from model.train import TrainConfig, recipe_of


def dihedral_views(images: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square (the orientations training draws), for a batch of images."""
    transposed = np.transpose(images, (0, 2, 1, 3))
    return [np.rot90(base, k, axes=(1, 2)) for base in (images, transposed) for k in range(4)]


def five_crops(images: np.ndarray, size: int) -> list[np.ndarray]:
    """Centre and four corner crops of a batch of square images."""
    spare = images.shape[1] - size
    corners = [(spare // 2, spare // 2), (0, 0), (0, spare), (spare, 0), (spare, spare)]
    return [images[:, top : top + size, left : left + size] for top, left in corners]


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Headline validation figures and the smallest margin over the project's floors."""
    metrics = headline_metrics(probabilities, labels, choose_threshold(probabilities, labels))
    figures = {name: metrics[name] for name in FLOORS}
    return {**figures, "margin": min(figures[name] - floor for name, floor in FLOORS.items())}


def probe(run_dir: Path, images: np.ndarray, labels: np.ndarray) -> dict | None:
    """Plain, d8 and d8x5 validation scores of one run (None if its input size differs)."""
    model = load_keras_model(run_dir)
    if tuple(model.input_shape[1:3]) != tuple(config.IMAGE_SIZE):
        return None
    temperature = 1.0 / float(model.get_layer(network.TEMPERATURE_LAYER).scale)
    crop = recipe_of(run_dir).get("crop_size") or TrainConfig.crop_size  # whole-image runs: the default
    cropped = network.with_temperature(model, temperature, (crop, crop))
    plain = _predict(model, images)
    d8 = np.mean([_predict(model, view) for view in dihedral_views(images)], axis=0)
    views = [view for square in five_crops(images, crop) for view in dihedral_views(square)]
    d8x5 = np.mean([_predict(cropped, view) for view in views], axis=0)
    return {name: scores(p, labels) for name, p in (("plain", plain), ("d8", d8), ("d8x5", d8x5))}


def main(run_dirs: list[str]) -> None:
    table = data.read_subset("val", config.WORK_DIR)
    labels = data.label_indices(table.label)
    images = load_image_files(table.path)
    results = {}
    for run_dir in map(Path, run_dirs):
        result = probe(run_dir, images, labels)
        if result is None:
            print(f"{run_dir}: skipped (input size differs)")
            continue
        results[run_dir.name] = result
        print(run_dir, "  ".join(f"{k} {_line(v)}" for k, v in result.items()), flush=True)
    for variant in ("d8", "d8x5"):
        change = {
            name: np.array([r[variant][name] - r["plain"][name] for r in results.values()])
            for name in (*FLOORS, "margin")
        }
        rose = int((change["accuracy"] > 0).sum())
        means = " ".join(f"{name} {values.mean():+.4f}" for name, values in change.items())
        print(f"{variant}: accuracy rose in {rose} of {len(results)} runs; mean change {means}")


def _predict(model, images: np.ndarray) -> np.ndarray:
    return model.predict(images, batch_size=128, verbose=0)


def _line(figures: dict) -> str:
    return "/".join(f"{figures[name]:.3f}" for name in FLOORS) + f" m{figures['margin']:+.3f}"


if __name__ == "__main__":
    main(sys.argv[1:])
