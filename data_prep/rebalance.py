"""Rebalance: top up every class of the training split to a target count with Augmentor.

Only `subset == "train"` rows are ever read here, so no augmented sample can derive from a
validation or Test picture. Raw data is never written; samples go to the derived-data folder with a
manifest that names each one's source picture.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import Augmentor
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from model import config
from model.preprocessing import decode_image

AUGMENTED_COLUMNS = ["path", "label", "augmented", "source_image_id", "source_pixel_hash"]


def dermoscopy_pipeline(images: list[np.ndarray], sources: list[int]) -> Augmentor.DataPipeline:
    """An Augmentor pipeline of geometric and mild photometric changes that keep lesion colours.

    A dermoscopic lesion has no up or down, so any rotation and both flips are label-preserving.
    Zoom stays mild so the lesion border stays in frame. Brightness and contrast change only
    intensity: no hue, saturation or colour-cast operation, which would invent colours (blue-white
    veil, pink vessels) that carry diagnostic meaning. The `labels` slot carries each image's source
    index so every sample can be traced back to its original.
    """
    pipeline = Augmentor.DataPipeline([[image] for image in images], list(sources))
    pipeline.rotate_random_90(probability=0.75)
    pipeline.rotate(probability=0.6, max_left_rotation=20, max_right_rotation=20)
    pipeline.flip_left_right(probability=0.5)
    pipeline.flip_top_bottom(probability=0.5)
    pipeline.zoom_random(probability=0.5, percentage_area=0.85)
    pipeline.random_brightness(probability=0.5, min_factor=0.85, max_factor=1.15)
    pipeline.random_contrast(probability=0.5, min_factor=0.85, max_factor=1.15)
    return pipeline


def rebalance(
    split: pd.DataFrame,
    out_dir: Path,
    target_per_class: int = config.REBALANCE_TARGET_PER_CLASS,
    seed: int = config.SEED,
) -> pd.DataFrame:
    """Write augmented samples so each training class reaches target_per_class; return the manifest.

    The manifest lists the original training pictures too (augmented=False), so it is the whole
    rebalanced training set. Classes already at or above the target keep all their originals.
    """
    train = split[split.subset == "train"]
    image_dir = Path(out_dir) / config.AUGMENTED_DIR
    if image_dir.exists():
        shutil.rmtree(image_dir)  # a rerun must not mix samples of two runs
    rows = []
    for class_index, label in enumerate(tqdm(config.CLASS_NAMES, desc="rebalance", disable=None)):
        originals = train[train.label == label].sort_values("pixel_hash")
        rows += [_original_row(r) for r in originals.itertuples()]
        missing = target_per_class - len(originals)
        if missing > 0 and len(originals):
            rows += _augment_class(originals, label, missing, image_dir, seed + class_index)
    return pd.DataFrame(rows, columns=AUGMENTED_COLUMNS)


def _augment_class(originals: pd.DataFrame, label: str, count: int, image_dir: Path, seed: int) -> list[dict]:
    # Augmentor draws from Python's and NumPy's global generators; seed both per class so a class's
    # samples do not depend on which classes ran before it.
    random.seed(seed)
    np.random.seed(seed)
    images = [np.asarray(decode_image(Path(p).read_bytes(), draft_size=None)) for p in originals.path]
    pipeline = dermoscopy_pipeline(images, list(range(len(images))))
    batch, sources = next(pipeline.generator(batch_size=count))
    class_dir = image_dir / label
    class_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (sample, source) in enumerate(zip(batch, sources)):
        origin = originals.iloc[source]
        path = class_dir / f"{origin.image_id}_aug{n:04d}.jpg"
        Image.fromarray(sample[0]).save(path, quality=95)
        rows.append(
            {
                "path": str(path.resolve()),
                "label": label,
                "augmented": True,
                "source_image_id": origin.image_id,
                "source_pixel_hash": origin.pixel_hash,
            }
        )
    return rows


def original_rows(split_rows: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows (augmented=False) for pictures of the split, as the rebalanced set lists them."""
    return pd.DataFrame([_original_row(r) for r in split_rows.itertuples()], columns=AUGMENTED_COLUMNS)


def _original_row(row) -> dict:
    return {
        "path": row.path,
        "label": row.label,
        "augmented": False,
        "source_image_id": row.image_id,
        "source_pixel_hash": row.pixel_hash,
    }
