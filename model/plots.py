"""Evaluation and training plots as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from model import config


def training_curves(history: pd.DataFrame, path: Path) -> Path:
    """Loss and accuracy per epoch for train and validation, plus validation balanced accuracy."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history) + 1)
    loss_ax.plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        loss_ax.plot(epochs, history["val_loss"], label="validation")
    loss_ax.set(title="Loss", xlabel="epoch")
    acc_ax.plot(epochs, history["accuracy"], label="train accuracy")
    for column, label in (
        ("val_accuracy", "validation accuracy"),
        ("val_balanced_accuracy", "validation balanced accuracy"),
    ):
        if column in history:
            acc_ax.plot(epochs, history[column], label=label)
    acc_ax.set(title="Accuracy", xlabel="epoch", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, path: Path, title: str, names=config.CLASS_NAMES
) -> Path:
    """Row-normalised confusion matrix with counts."""
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    ConfusionMatrixDisplay.from_predictions(
        labels,
        predicted,
        labels=range(len(names)),
        display_labels=list(names),
        xticks_rotation=45,
        ax=ax,
        colorbar=False,
        cmap="Blues",
    )
    ax.set_title(title)
    return save_figure(fig, path)


def roc_curves(
    labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str, names=config.CLASS_NAMES
) -> Path:
    """One-vs-rest ROC curve of every class present in labels."""
    fig, ax = plt.subplots(figsize=(7, 6.5))
    for index, name in enumerate(names):
        positives = labels == index
        if positives.any() and not positives.all():
            RocCurveDisplay.from_predictions(positives, probabilities[:, index], name=name, ax=ax)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def reliability_diagram(table: dict, path: Path, title: str) -> Path:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    edges = np.array(table["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    accuracy = [a if a is not None else 0 for a in table["accuracy"]]
    ax.bar(centres, accuracy, width=edges[1] - edges[0], edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a figure as PNG (creating its folder) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
