"""Figures: class counts before/after rebalancing and a grid of sample images per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from model import config
from model.plots import save_figure
from model.preprocessing import load_image_file


def plot_class_counts(split: pd.DataFrame, augmented: pd.DataFrame, path: Path) -> Path:
    """Bar chart of training images per class before and after rebalancing."""
    before = split[split.subset == "train"].label.value_counts()
    after = augmented.label.value_counts()
    x = np.arange(config.NUM_CLASSES)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(x - 0.2, [before.get(c, 0) for c in config.CLASS_NAMES], 0.4, label="train split")
    ax.bar(x + 0.2, [after.get(c, 0) for c in config.CLASS_NAMES], 0.4, label="after Augmentor")
    ax.set_xticks(x, config.CLASS_NAMES, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title("Training images per class")
    ax.legend()
    return save_figure(fig, path)


def plot_sample_grid(table: pd.DataFrame, path: Path, per_class: int = 6, seed: int = config.SEED) -> Path:
    """A grid with per_class random images of every class (rows) from a table with path and label."""
    fig, axes = plt.subplots(
        config.NUM_CLASSES, per_class, figsize=(per_class * 1.4, config.NUM_CLASSES * 1.5)
    )
    for row, label in enumerate(config.CLASS_NAMES):
        rows = table[table.label == label]
        picked = rows.sample(min(per_class, len(rows)), random_state=seed).path
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(picked):
                ax.imshow(load_image_file(picked.iloc[col], config.SOURCE_IMAGE_SIZE).astype(np.uint8))
        axes[row][0].set_title(label, fontsize=8, loc="left")
    return save_figure(fig, path)
