"""Split: resolve labels, remove leakage, and carve train/validation from Train by lesion.

Label policy, applied in this order to each distinct picture of Train (exact duplicates merged):
1. One folder label and no HAM10000 record, or a record that agrees: keep the label.
2. HAM10000 has a record: keep the folder labels its `dx` is compatible with. One left: that label
   (HAM settles it). None left: drop the picture (HAM says every folder is wrong and `dx` alone
   cannot name one of our classes: `akiec` is both actinic keratosis and squamous cell carcinoma).
3. Two folder labels and no HAM10000 record (the 75 melanoma + seborrheic keratosis pictures):
   keep the smaller class. Why: in every conflict HAM10000 can settle (62 actinic keratosis +
   nevus), it sides with the smaller, specific class; and the official Test labels of the 3
   seborrheic keratoses that Train files under melanoma say seborrheic keratosis. The big folders
   absorbed pictures of small classes, not the reverse. With --conflicts drop they are dropped.
Then every Train picture that is also in Test, or whose HAM10000 lesion has a Test picture, is
removed, and train/validation are cut by StratifiedGroupKFold with the lesion (or, without a HAM
record, the picture) as the group, so no picture or lesion sits on both sides.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from data_prep.audit import with_ham
from model import config

CONFLICT_POLICIES = ("smaller-class", "drop")
SPLIT_COLUMNS = ["image_id", "path", "subset", "label", "pixel_hash", "lesion_id", "resolution"]


def make_split(
    manifest: pd.DataFrame,
    ham: pd.DataFrame,
    val_fraction: float = config.VALIDATION_FRACTION,
    seed: int = config.SEED,
    conflicts: str = "smaller-class",
) -> tuple[pd.DataFrame, dict]:
    """Return the split table (train/val/test rows) and a summary with the split's content hash."""
    rows = with_ham(manifest, ham)
    train_pool, label_drops = resolve_labels(rows[rows.split == "Train"], conflicts)
    test = rows[rows.split == "Test"].assign(subset="test", resolution="official Test label")
    train_pool, leak_drops = _remove_test_leakage(train_pool, test)
    train_pool = _assign_validation(train_pool, val_fraction, seed)
    split = pd.concat([train_pool, test], ignore_index=True)[SPLIT_COLUMNS]
    split = split.sort_values(["subset", "label", "image_id"], ignore_index=True)
    summary = {
        "content_hash": split_hash(split),
        "policy": {"conflicts": conflicts, "val_fraction": val_fraction, "seed": seed},
        "counts": {s: g.label.value_counts().to_dict() for s, g in split.groupby("subset")},
        "resolutions": split[split.subset != "test"].resolution.value_counts().to_dict(),
        "dropped": {**label_drops, **leak_drops},
    }
    return split, summary


def resolve_labels(
    train: pd.DataFrame, conflicts: str = "smaller-class"
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Merge exact duplicates, give each distinct Train picture one label; count what is dropped."""
    if conflicts not in CONFLICT_POLICIES:
        raise ValueError(f"conflicts must be one of {CONFLICT_POLICIES}, not {conflicts!r}")
    class_sizes = train.groupby("label").pixel_hash.nunique()
    kept, dropped = [], {}
    for _, group in train.sort_values("path").groupby("pixel_hash", sort=True):
        label, resolution = _resolve(group, class_sizes, conflicts)
        if label is None:
            dropped[resolution] = dropped.get(resolution, 0) + 1
            continue
        first = group.iloc[0]
        kept.append({**first.to_dict(), "label": label, "resolution": resolution})
    return pd.DataFrame(kept), dropped


def split_hash(split: pd.DataFrame) -> str:
    """A content hash of which picture is in which subset under which label."""
    lines = sorted(f"{s}\t{h}\t{lab}" for s, h, lab in zip(split.subset, split.pixel_hash, split.label))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_split(split: pd.DataFrame, summary: dict, out_dir: Path) -> Path:
    """Write split.csv and split.json into out_dir; return the CSV path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    split.to_csv(out_dir / config.SPLIT_FILE, index=False)
    (out_dir / config.SPLIT_INFO_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return out_dir / config.SPLIT_FILE


def _resolve(group: pd.DataFrame, class_sizes: pd.Series, conflicts: str) -> tuple[str | None, str]:
    labels = sorted(set(group.label))
    dx = group.dx.dropna()
    if len(dx):
        compatible = [lab for lab in labels if lab in config.HAM_DX_TO_CLASSES.get(dx.iloc[0], ())]
        if len(compatible) == 1:
            agreed = len(labels) == 1
            return compatible[0], "folder label" if agreed else "conflict settled by HAM10000 dx"
        if not compatible:
            return None, "HAM10000 dx contradicts every folder label"
        labels = compatible
    if len(labels) == 1:
        return labels[0], "folder label"
    if conflicts == "drop":
        return None, "unsettled label conflict"
    return min(labels, key=lambda lab: (class_sizes[lab], lab)), "unsettled conflict: smaller class"


def _remove_test_leakage(pool: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    same_picture = pool.pixel_hash.isin(set(test.pixel_hash))
    same_lesion = pool.lesion_id.isin(set(test.lesion_id.dropna())) & ~same_picture
    drops = {
        "picture also in Test": int(same_picture.sum()),
        "HAM10000 lesion also in Test": int(same_lesion.sum()),
    }
    return pool[~same_picture & ~same_lesion], drops


def _assign_validation(pool: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    pool = pool.reset_index(drop=True)
    groups = pool.lesion_id.fillna(pool.pixel_hash)
    n_splits = max(2, round(1 / val_fraction))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_index = next(folds.split(pool, pool.label, groups))
    subset = pd.Series("train", index=pool.index)
    subset[val_index] = "val"
    return pool.assign(subset=subset)
