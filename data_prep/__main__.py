"""Command line: `python -m data_prep {ingest,audit,split,rebalance,figures,all}`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from data_prep import audit, figures, ingest, rebalance, split
from model import config

log = logging.getLogger("data_prep")


def main(argv: list[str] | None = None) -> int:
    """Run one stage, or all of them in order; print where the outputs went."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else {args.stage: STAGES[args.stage]}
    try:
        for stage in stages.values():
            stage(args)
    except ingest.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(
            f"error: {exc.filename} not found; run the earlier stages first (python -m data_prep all).",
            file=sys.stderr,
        )
        return 2
    return 0


def run_ingest(args: argparse.Namespace) -> None:
    """Scan the dataset into manifest.csv."""
    ham = audit.load_ham_metadata(args.ham_metadata)
    if not Path(args.ham_dir).is_dir():
        # Optional for a quick look at isic9, but not what the committed model was trained on: say so.
        log.warning(
            "no HAM10000 images at %s (--ham-dir, env HAM_IMAGES_DIR): isic9 only, so no HAM10000 "
            "held-out test and not the committed model's data",
            args.ham_dir,
        )
    elif ham.empty:
        raise ingest.DatasetError(
            f"{args.ham_metadata} not found (--ham-metadata, env HAM_METADATA_PATH): the HAM10000 images "
            f"in {args.ham_dir} cannot be labelled or grouped by lesion without it."
        )
    manifest, skipped = ingest.scan_sources(args.data_dir, ham, args.ham_dir)
    manifest.to_csv(args.work_dir / config.MANIFEST_FILE, index=False)
    sources = manifest.source.value_counts().to_dict()
    out = args.work_dir / config.MANIFEST_FILE
    print(f"ingest: {len(manifest)} images ({sources}), {len(skipped)} skipped -> {out}")
    for item in skipped:
        print(f"  skipped {item.path}: {item.reason}")


def run_audit(args: argparse.Namespace) -> None:
    """Write audit.json and audit.md."""
    manifest = pd.read_csv(args.work_dir / config.MANIFEST_FILE)
    report = audit.audit(manifest, audit.load_ham_metadata(args.ham_metadata))
    _, md_path = audit.write_audit(report, args.work_dir)
    print(
        f"audit: {report['train_label_conflicts']['images']} Train images in two folders, "
        f"{report['test_in_train']['under_another_label']} Test images in Train under another "
        f"label -> {md_path}"
    )


def run_split(args: argparse.Namespace) -> None:
    """Write split.csv and split.json."""
    manifest = pd.read_csv(args.work_dir / config.MANIFEST_FILE)
    table, summary = split.make_split(
        manifest,
        audit.load_ham_metadata(args.ham_metadata),
        args.val_fraction,
        args.seed,
        args.conflicts,
        args.ham_test_fraction,
    )
    path = split.write_split(table, summary, args.work_dir)
    counts = {s: sum(c.values()) for s, c in summary["counts"].items()}
    print(f"split: {counts}, dropped {summary['dropped']}, hash {summary['content_hash'][:12]} -> {path}")


def run_rebalance(args: argparse.Namespace) -> None:
    """Write the Augmentor samples and augmented.csv."""
    table = pd.read_csv(args.work_dir / config.SPLIT_FILE)
    manifest = rebalance.rebalance(table, args.work_dir, args.target_per_class, args.seed)
    manifest.to_csv(args.work_dir / config.AUGMENTED_MANIFEST_FILE, index=False)
    print(
        f"rebalance: {len(manifest)} training images ({int(manifest.augmented.sum())} augmented) "
        f"-> {args.work_dir / config.AUGMENTED_MANIFEST_FILE}"
    )


def run_figures(args: argparse.Namespace) -> None:
    """Write the class-count and sample-grid PNGs."""
    table = pd.read_csv(args.work_dir / config.SPLIT_FILE)
    augmented = pd.read_csv(args.work_dir / config.AUGMENTED_MANIFEST_FILE)
    out = args.work_dir / "figures"
    paths = [
        figures.plot_class_counts(table, augmented, out / "class_counts.png"),
        figures.plot_sample_grid(table[table.subset == "train"], out / "samples_train.png"),
        figures.plot_sample_grid(augmented[augmented.augmented], out / "samples_augmented.png"),
    ]
    print("figures: " + json.dumps([str(p) for p in paths]))


STAGES = {
    "ingest": run_ingest,
    "audit": run_audit,
    "split": run_split,
    "rebalance": run_rebalance,
    "figures": run_figures,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__)
    parser.add_argument("stage", choices=[*STAGES, "all"], help="stage to run; 'all' runs every stage")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=config.DATA_DIR,
        help="folder with Train/ and Test/ (env ISIC_DATA_DIR; default %(default)s)",
    )
    parser.add_argument(
        "--ham-metadata",
        type=Path,
        default=config.HAM_METADATA_PATH,
        help="HAM10000_metadata.csv (env HAM_METADATA_PATH; optional; default %(default)s)",
    )
    parser.add_argument(
        "--ham-dir",
        type=Path,
        default=config.HAM_IMAGES_DIR,
        help="folder of the HAM10000 images (env HAM_IMAGES_DIR; optional; default %(default)s)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=config.WORK_DIR,
        help="derived-data folder (env ISIC_WORK_DIR; default %(default)s)",
    )
    parser.add_argument("--val-fraction", type=float, default=config.VALIDATION_FRACTION)
    parser.add_argument("--ham-test-fraction", type=float, default=config.HAM_TEST_FRACTION)
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument(
        "--conflicts",
        choices=split.CONFLICT_POLICIES,
        default="smaller-class",
        help="what to do with label conflicts HAM10000 cannot settle",
    )
    parser.add_argument("--target-per-class", type=int, default=config.REBALANCE_TARGET_PER_CLASS)
    return parser


if __name__ == "__main__":
    sys.exit(main())
