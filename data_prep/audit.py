"""Audit: duplicates, label conflicts, Train/Test overlap, lesion leakage and HAM10000 contradictions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from model import config


def load_ham_metadata(path: Path | None) -> pd.DataFrame:
    """Read HAM10000_metadata.csv (image_id, lesion_id, dx); an absent path gives an empty table."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame(columns=["image_id", "lesion_id", "dx"])
    return pd.read_csv(path, usecols=["image_id", "lesion_id", "dx"])


def with_ham(manifest: pd.DataFrame, ham: pd.DataFrame) -> pd.DataFrame:
    """Add HAM10000 lesion_id and dx to each manifest row (NaN where HAM10000 has no record)."""
    return manifest.merge(ham.drop_duplicates("image_id"), on="image_id", how="left")


def audit(manifest: pd.DataFrame, ham: pd.DataFrame) -> dict:
    """Return every defect the split must handle, with counts per class and per source."""
    every = manifest if "lesion_id" in manifest else with_ham(manifest, ham)
    if "source" not in every:
        every = every.assign(source=config.ISIC9_SOURCE)
    rows = every[every.source == config.ISIC9_SOURCE]
    train, test = rows[rows.split == "Train"], rows[rows.split == "Test"]
    return {
        "images": _counts_per_split(rows),
        "sources": _sources(every),
        "ham_dx_training_label": config.HAM_DX_TRAINING_LABEL,
        "exact_duplicates": _exact_duplicates(rows),
        "train_label_conflicts": _label_conflicts(train),
        "test_in_train": _test_in_train(train, test),
        "lesions_across_splits": _lesions_across(train, test),
        "ham_contradictions": _ham_contradictions(rows),
    }


def write_audit(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write the audit as JSON and Markdown; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / config.AUDIT_JSON_FILE, out_dir / config.AUDIT_MD_FILE
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    md_path.write_text(audit_markdown(report))
    return json_path, md_path


def audit_markdown(report: dict) -> str:
    """Render the audit as a Markdown report for people."""
    conflicts, overlap = report["train_label_conflicts"], report["test_in_train"]
    lesions, ham = report["lesions_across_splits"], report["ham_contradictions"]
    dups = report["exact_duplicates"]
    lines = [
        "# Data audit",
        "",
        "| split | " + " | ".join(config.CLASS_NAMES) + " | total |",
        "|---|" + "---|" * (config.NUM_CLASSES + 1),
    ]
    for split, counts in report["images"].items():
        cells = [str(counts.get(c, 0)) for c in config.CLASS_NAMES]
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {sum(counts.values())} |")
    lines += [
        "",
        f"- Exact duplicate groups (same pixels, more than one file): {dups['groups']} "
        f"({dups['extra_files']} extra files).",
        f"- Train images in two class folders at once: **{conflicts['images']}**. "
        f"By label pair: {_pairs_text(conflicts['by_pair'])}.",
        f"- Test images that also sit in Train: **{overlap['images']}**, of which "
        f"**{overlap['under_another_label']}** under another label. "
        f"By Test class: {overlap['by_test_class']}.",
        f"- HAM10000 lesions with images in both Train and Test: **{lesions['lesions']}** "
        f"({lesions['test_images']} Test images). By Test class: {lesions['by_test_class']}.",
        f"- Folder labels that HAM10000's `dx` contradicts: **{ham['images']}**. "
        f"By folder and dx: {ham['by_label_and_dx']}.",
        "",
    ]
    return "\n".join(lines + _sources_markdown(report.get("sources")))


def _sources_markdown(sources: dict | None) -> list[str]:
    if not sources or config.HAM_SOURCE not in sources["by_source_and_class"]:
        return []
    lines = ["## Sources", "", "| source | " + " | ".join(config.CLASS_NAMES) + " | no single class |"]
    lines.append("|---|" + "---|" * (config.NUM_CLASSES + 1))
    for source, counts in sources["by_source_and_class"].items():
        cells = [str(counts.get(c, 0)) for c in (*config.CLASS_NAMES, "(no single class)")]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    policy = ", ".join(
        f"`{dx}` -> {label or 'not trained on'}" for dx, label in config.HAM_DX_TRAINING_LABEL.items()
    )
    lines += [
        "",
        f"- HAM10000 pictures that isic9 also holds (one image, kept as its isic9 copy): "
        f"**{sources['ham_pictures_in_isic9']}** (by dx: {sources['ham_pictures_in_isic9_by_dx']}).",
        f"- HAM10000: {sources['ham_lesions']} lesions; exact duplicate groups "
        f"{sources['ham_exact_duplicates']['groups']}.",
        f"- Label policy for HAM10000 pictures isic9 does not hold (dx -> class): {policy}.",
        "",
    ]
    return lines


def _sources(every: pd.DataFrame) -> dict:
    """Counts by source x class, and the pictures both sources hold (one image, not two)."""
    ham_rows = every[every.source == config.HAM_SOURCE]
    isic_ids = set(every[every.source == config.ISIC9_SOURCE].image_id)
    shared = ham_rows[ham_rows.image_id.isin(isic_ids)]
    return {
        "by_source_and_class": {
            s: g.label.fillna("(no single class)").value_counts().to_dict()
            for s, g in every.groupby("source")
        },
        "ham_by_dx": ham_rows.dx.value_counts().to_dict(),
        "ham_pictures_in_isic9": int(len(shared)),
        "ham_pictures_in_isic9_by_dx": shared.dx.value_counts().to_dict(),
        "ham_exact_duplicates": _exact_duplicates(ham_rows),
        "ham_lesions": int(ham_rows.lesion_id.nunique()),
    }


def _counts_per_split(rows: pd.DataFrame) -> dict:
    return {s: rows[rows.split == s].label.value_counts().to_dict() for s in ("Train", "Test")}


def _exact_duplicates(rows: pd.DataFrame) -> dict:
    sizes = rows.groupby("pixel_hash").size()
    repeated = sizes[sizes > 1]
    return {"groups": int(len(repeated)), "extra_files": int((repeated - 1).sum())}


def _label_conflicts(train: pd.DataFrame) -> dict:
    labels = train.groupby("pixel_hash").label.agg(lambda s: tuple(sorted(set(s))))
    conflicted = labels[labels.map(len) > 1]
    by_pair = Counter(" + ".join(pair) for pair in conflicted)
    return {
        "images": int(len(conflicted)),
        "by_pair": dict(by_pair),
        "pixel_hashes": sorted(conflicted.index),
    }


def _test_in_train(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    train_labels = train.groupby("pixel_hash").label.agg(set)
    shared = test[test.pixel_hash.isin(train_labels.index)]
    other = shared[[lab not in train_labels[h] for h, lab in zip(shared.pixel_hash, shared.label)]]
    return {
        "images": int(len(shared)),
        "under_another_label": int(len(other)),
        "by_test_class": shared.label.value_counts().to_dict(),
        "image_ids": sorted(shared.image_id),
    }


def _lesions_across(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    both = set(train.lesion_id.dropna()) & set(test.lesion_id.dropna())
    test_rows = test[test.lesion_id.isin(both)]
    return {
        "lesions": len(both),
        "test_images": int(len(test_rows)),
        "train_images": int(train.lesion_id.isin(both).sum()),
        "by_test_class": test_rows.label.value_counts().to_dict(),
    }


def _ham_contradictions(rows: pd.DataFrame) -> dict:
    known = rows.dropna(subset=["dx"])
    mapped = [lab in config.HAM_DX_TO_CLASSES.get(dx, ()) for lab, dx in zip(known.label, known.dx)]
    bad = known.loc[[not ok for ok in mapped]]  # .loc: an empty list must select no rows, not no columns
    by = Counter(f"{s}/{lab} (dx={dx})" for s, lab, dx in zip(bad.split, bad.label, bad.dx))
    return {"images": int(len(bad)), "by_label_and_dx": dict(by)}


def _pairs_text(by_pair: dict) -> str:
    return ", ".join(f"{n} {pair}" for pair, n in sorted(by_pair.items())) or "none"
