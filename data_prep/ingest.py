"""Ingest: scan isic9's `Train/` and `Test/` class folders and the HAM10000 folder into one manifest.

Each row is one readable file: its source, image id, HAM10000 lesion id and dx (where HAM10000 has a
record), split (isic9's Train/Test, or HAM10000), label and pixel hash. A HAM10000 picture that isic9
also holds appears under both sources here; the split keeps one of the two (data_prep.split).
"""

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
HAM_SPLIT = "HAM10000"
MANIFEST_COLUMNS = [
    "source",
    "image_id",
    "lesion_id",
    "dx",
    "path",
    "split",
    "label",
    "pixel_hash",
    "width",
    "height",
]
_IMAGE_ID = re.compile(r"ISIC_\d+")


class DatasetError(Exception):
    """The dataset folder does not have the expected layout; the message says what to fix."""


@dataclass
class Skipped:
    """A file that was found but could not be used, and why."""

    path: str
    reason: str


def scan_sources(
    data_dir: Path, ham: pd.DataFrame, ham_dir: Path | None = None
) -> tuple[pd.DataFrame, list[Skipped]]:
    """The manifest of isic9 (data_dir) and, if ham_dir exists, HAM10000; and the files skipped."""
    isic, skipped = scan_dataset(data_dir)
    frames = [isic]
    if ham_dir is not None and Path(ham_dir).is_dir():
        ham_rows, ham_skipped = scan_ham(Path(ham_dir), ham)
        frames.append(ham_rows)
        skipped += ham_skipped
    manifest = pd.concat(frames, ignore_index=True).drop(columns=["lesion_id", "dx"])
    records = ham.drop_duplicates("image_id")[["image_id", "lesion_id", "dx"]]
    return manifest.merge(records, on="image_id", how="left")[MANIFEST_COLUMNS], skipped


def scan_dataset(data_dir: Path) -> tuple[pd.DataFrame, list[Skipped]]:
    """Return the manifest of every readable image of isic9 under data_dir, and the files skipped."""
    class_dirs = _class_dirs(Path(data_dir))
    files = [(split, label, f) for split, label, d in class_dirs for f in sorted(d.iterdir())]
    return _describe_all(files, config.ISIC9_SOURCE)


def scan_ham(ham_dir: Path, ham: pd.DataFrame) -> tuple[pd.DataFrame, list[Skipped]]:
    """Every HAM10000 picture of ham_dir that its metadata lists, labelled by HAM_DX_TRAINING_LABEL."""
    dx_of = dict(zip(ham.image_id, ham.dx))
    files = sorted(p for p in Path(ham_dir).iterdir() if p.stem in dx_of)
    if not files:
        raise DatasetError(f"{ham_dir} holds no picture that {config.HAM_METADATA_PATH.name} lists.")
    labelled = [(HAM_SPLIT, config.HAM_DX_TRAINING_LABEL.get(dx_of[p.stem]) or "", p) for p in files]
    return _describe_all(labelled, config.HAM_SOURCE)


def _describe_all(files: list[tuple[str, str, Path]], source: str) -> tuple[pd.DataFrame, list[Skipped]]:
    rows, skipped = [], []
    for split, label, path in tqdm(files, desc=f"ingest {source}", unit="img", disable=None):
        row = _describe(path, split, label)
        if isinstance(row, Skipped):
            log.warning("skipped %s: %s", row.path, row.reason)
            skipped.append(row)
        else:
            rows.append({"source": source, "lesion_id": None, "dx": None, **row})
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
