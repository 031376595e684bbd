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
Two sources, one picture each: a HAM10000 picture that isic9 also holds keeps its isic9 copy and
label (the folder says actinic keratosis or squamous cell carcinoma where dx says only akiec); other
HAM10000 pictures take config.HAM_DX_TRAINING_LABEL.

Subsets, every one grouped by lesion (HAM10000 `lesion_id`, or the picture's pixel hash without one):
- test: the official isic9 Test split, whole. No picture or lesion of it is trained on.
- ham_test: config.HAM_TEST_FRACTION of the HAM10000 lesions without a picture in isic9 Test,
  stratified by dx, from the HAM10000 files. Never trained or tuned on.
- train / val: the rest, cut by StratifiedGroupKFold on the label with the lesion as the group.
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
SPLIT_COLUMNS = [
    "source",
    "image_id",
    "path",
    "subset",
    "label",
    "dx",
    "pixel_hash",
    "lesion_id",
    "resolution",
]


def make_split(
    manifest: pd.DataFrame,
    ham: pd.DataFrame,
    val_fraction: float = config.VALIDATION_FRACTION,
    seed: int = config.SEED,
    conflicts: str = "smaller-class",
    ham_test_fraction: float = config.HAM_TEST_FRACTION,
) -> tuple[pd.DataFrame, dict]:
    """Return the split table (train/val/test/ham_test rows) and a summary with its content hash."""
    rows = _with_records(manifest, ham)
    isic, ham_rows = rows[rows.source == config.ISIC9_SOURCE], rows[rows.source == config.HAM_SOURCE]
    test = isic[isic.split == "Test"].assign(subset="test", resolution="official Test label")
    ham_test = _ham_test(ham_rows, test, ham_test_fraction, seed)
    train_pool, label_drops = resolve_labels(isic[isic.split == "Train"], conflicts)
    held_out = set(isic.image_id) | set(ham_test.image_id)
    ham_only = ham_rows[~ham_rows.image_id.isin(held_out)]
    ham_only, unlabelled = _with_training_labels(ham_only)
    pool = pd.concat([train_pool, ham_only], ignore_index=True)
    pool, leak_drops = _remove_leakage(pool, {"isic9 Test": test, "HAM10000 held-out test": ham_test})
    pool = _assign_validation(pool, val_fraction, seed)
    split = pd.concat([pool, test, ham_test], ignore_index=True)[SPLIT_COLUMNS]
    split = split.sort_values(["subset", "source", "label", "image_id"], ignore_index=True)
    summary = {
        "content_hash": split_hash(split),
        "policy": {
            "conflicts": conflicts,
            "val_fraction": val_fraction,
            "ham_test_fraction": ham_test_fraction,
            "seed": seed,
            "ham_dx_training_label": config.HAM_DX_TRAINING_LABEL,
        },
        "counts": {
            s: g.label.fillna("(dx akiec)").value_counts().to_dict() for s, g in split.groupby("subset")
        },
        "counts_by_source": {s: g.source.value_counts().to_dict() for s, g in split.groupby("subset")},
        "resolutions": split[~split.subset.isin(config.TEST_SUBSETS)].resolution.value_counts().to_dict(),
        "dropped": {**label_drops, **unlabelled, **leak_drops},
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
    rows = zip(split.subset, split.pixel_hash, split.label.fillna(""))
    lines = sorted(f"{s}\t{h}\t{lab}" for s, h, lab in rows)
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


def lesion_groups(rows: pd.DataFrame) -> pd.Series:
    """One group key per row: rows that share a lesion id or a pixel hash, even through a chain, share it."""
    groups = rows.lesion_id.fillna(rows.pixel_hash).astype(str)
    while True:  # two pictures of one lesion may each have a pixel twin filed under another lesion
        merged = groups.groupby(rows.pixel_hash).transform("min")
        merged = merged.groupby(groups).transform("min")
        if merged.equals(groups):
            return groups
        groups = merged


def _with_records(manifest: pd.DataFrame, ham: pd.DataFrame) -> pd.DataFrame:
    # Manifests of the current ingest carry source, lesion id and dx; an older one gets them here.
    if "source" not in manifest:
        manifest = manifest.assign(source=config.ISIC9_SOURCE)
    if "lesion_id" not in manifest:
        manifest = with_ham(manifest, ham)
    return manifest


def _ham_test(ham_rows: pd.DataFrame, isic_test: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """HAM10000 files of a stratified share of the lesions that have no picture in isic9 Test."""
    candidates = ham_rows[~ham_rows.lesion_id.isin(set(isic_test.lesion_id.dropna()))].reset_index(drop=True)
    if candidates.empty or fraction <= 0:
        return candidates.assign(subset="ham_test", resolution="HAM10000 dx")
    folds = StratifiedGroupKFold(
        n_splits=_fold_count(fraction, candidates.dx), shuffle=True, random_state=seed
    )
    _, test_index = next(folds.split(candidates, candidates.dx, candidates.lesion_id))
    return candidates.iloc[test_index].assign(subset="ham_test", resolution="HAM10000 dx")


def _with_training_labels(ham_only: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    labelled = ham_only.label.notna() & (ham_only.label.astype(str) != "")
    drops = {"HAM10000 dx with no single class (akiec)": int((~labelled).sum())}
    return ham_only[labelled].assign(resolution="HAM10000 dx policy"), drops


def _remove_leakage(pool: pd.DataFrame, tests: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    drops, keep = {}, pd.Series(True, index=pool.index)
    for name, test in tests.items():
        same_picture = pool.pixel_hash.isin(set(test.pixel_hash)) | pool.image_id.isin(set(test.image_id))
        same_lesion = pool.lesion_id.isin(set(test.lesion_id.dropna())) & ~same_picture
        drops[f"picture also in {name}"] = int((same_picture & keep).sum())
        drops[f"lesion also in {name}"] = int((same_lesion & keep).sum())
        keep &= ~same_picture & ~same_lesion
    return pool[keep], drops


def _assign_validation(pool: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    pool = pool.reset_index(drop=True)
    groups = lesion_groups(pool)
    folds = StratifiedGroupKFold(
        n_splits=_fold_count(val_fraction, pool.label), shuffle=True, random_state=seed
    )
    _, val_index = next(folds.split(pool, pool.label, groups))
    subset = pd.Series("train", index=pool.index)
    subset[val_index] = "val"
    return pool.assign(subset=subset)


def _fold_count(fraction: float, strata: pd.Series) -> int:
    # One fold of round(1 / fraction) is the held-out share; a tiny set (tests) cannot have more
    # folds than its largest stratum has members.
    return max(2, min(round(1 / fraction), int(strata.value_counts().max())))
