"""Ingest: scan `Train/` and `Test/` class folders into a manifest of every readable image."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from model import config
from model.preprocessing import ImageError, decode_image

log = logging.getLogger(__name__)

SPLITS = ("Train", "Test")
MANIFEST_COLUMNS = ["image_id", "path", "split", "label", "pixel_hash", "width", "height"]
_IMAGE_ID = re.compile(r"ISIC_\d+")


class DatasetError(Exception):
    """The dataset folder does not have the expected layout; the message says what to fix."""


@dataclass
class Skipped:
    """A file that was found but could not be used, and why."""

    path: str
    reason: str


def scan_dataset(data_dir: Path) -> tuple[pd.DataFrame, list[Skipped]]:
    """Return the manifest of every readable image under data_dir, and the files skipped."""
    class_dirs = _class_dirs(Path(data_dir))
    rows, skipped = [], []
    files = [(split, label, f) for split, label, d in class_dirs for f in sorted(d.iterdir())]
    for split, label, path in tqdm(files, desc="ingest", unit="img", disable=None):
        row = _describe(path, split, label)
        if isinstance(row, Skipped):
            log.warning("skipped %s: %s", row.path, row.reason)
            skipped.append(row)
        else:
            rows.append(row)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS), skipped


def pixel_hash(rgb: np.ndarray) -> str:
    """A hash of decoded pixels, so the same picture matches whatever its file name or encoding."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()[:20]


def _class_dirs(data_dir: Path) -> list[tuple[str, str, Path]]:
    if not data_dir.is_dir():
        raise DatasetError(
            f"Dataset folder {data_dir} does not exist. Download the Kaggle set 'Skin cancer ISIC "
            "The International Skin Imaging Collaboration' and point ISIC_DATA_DIR (or --data-dir) "
            "at the folder that holds Train/ and Test/."
        )
    found = []
    for split in SPLITS:
        split_dir = data_dir / split
        if not split_dir.is_dir():
            raise DatasetError(f"{split_dir} is missing: expected {data_dir}/{{Train,Test}}/<class>/.")
        names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        unknown = sorted(set(names) - set(config.CLASS_NAMES))
        if unknown:
            raise DatasetError(
                f"Unknown class folder(s) in {split_dir}: {unknown}. "
                f"Expected only: {list(config.CLASS_NAMES)}."
            )
        missing = sorted(set(config.CLASS_NAMES) - set(names))
        if missing:
            raise DatasetError(f"Class folder(s) missing in {split_dir}: {missing}.")
        for label in config.CLASS_NAMES:
            class_dir = split_dir / label
            if not any(p.suffix.lower() in config.IMAGE_SUFFIXES for p in class_dir.iterdir()):
                raise DatasetError(f"Class folder {class_dir} holds no images.")
            found.append((split, label, class_dir))
    return found


def _describe(path: Path, split: str, label: str) -> dict | Skipped:
    if not path.is_file():
        return Skipped(str(path), "not a file")
    if path.suffix.lower() not in config.IMAGE_SUFFIXES:
        return Skipped(str(path), f"not an image file ({path.suffix or 'no extension'})")
    try:
        # Decode at full size: the hash must see every pixel, not a JPEG draft.
        image = decode_image(path.read_bytes(), draft_size=None)
    except ImageError as exc:
        return Skipped(str(path), str(exc))
    match = _IMAGE_ID.search(path.stem)
    return {
        "image_id": match.group(0) if match else path.stem,
        "path": str(path.resolve()),
        "split": split,
        "label": label,
        "pixel_hash": pixel_hash(np.asarray(image)),
        "width": image.width,
        "height": image.height,
    }
