"""data_prep on a synthetic dataset with planted defects: each is found and handled."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from data_prep import audit, ingest, split
from data_prep.__main__ import main
from model import config


def _manifest(work):
    return pd.read_csv(work / config.MANIFEST_FILE)


def test_ingest_skips_corrupt_and_non_image_files(synthetic_dataset):
    manifest, skipped = ingest.scan_dataset(synthetic_dataset["root"])
    reasons = {s.path.split("/")[-1]: s.reason for s in skipped}
    assert set(reasons) == {"ISIC_9999999.jpg", "notes.txt"}
    assert "corrupt" in reasons["ISIC_9999999.jpg"] or "not an image" in reasons["ISIC_9999999.jpg"]
    assert "not an image file" in reasons["notes.txt"]
    assert list(manifest.columns) == ingest.MANIFEST_COLUMNS
    assert set(manifest.split) == {"Train", "Test"}
    assert (manifest.width == 40).all() and (manifest.height == 40).all()


def test_image_id_ignores_copy_suffix(synthetic_dataset):
    manifest, _ = ingest.scan_dataset(synthetic_dataset["root"])
    dup = synthetic_dataset["planted"]["duplicate"]
    row = manifest[manifest.path == str(dup.resolve())].iloc[0]
    assert row.image_id == dup.stem.replace("(1)", "")


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: shutil.rmtree(root / "Test"), "Test is missing"),
        (lambda root: (root / "Train" / "warts").mkdir(), "Unknown class folder"),
        (lambda root: shutil.rmtree(root / "Train" / "nevus"), "missing"),
        (lambda root: [p.unlink() for p in (root / "Test" / "melanoma").iterdir()], "holds no images"),
    ],
)
def test_layout_errors_are_clear(synthetic_dataset, tmp_path, breakage, message):
    root = tmp_path / "isic9"
    shutil.copytree(synthetic_dataset["root"], root)
    breakage(root)
    with pytest.raises(ingest.DatasetError, match=message):
        ingest.scan_dataset(root)


def test_missing_dataset_folder_gives_exit_2_and_message(tmp_path, capsys):
    assert main(["ingest", "--data-dir", str(tmp_path / "nowhere"), "--work-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_audit_finds_every_planted_defect(synthetic_prepared):
    report = json.loads((synthetic_prepared / config.AUDIT_JSON_FILE).read_text())
    assert report["exact_duplicates"]["groups"] == 4  # duplicate, two conflicts, test-in-train
    assert report["train_label_conflicts"]["images"] == 2
    assert report["train_label_conflicts"]["by_pair"] == {
        "melanoma + seborrheic keratosis": 1,
        "actinic keratosis + nevus": 1,
    }
    assert report["test_in_train"] == {
        **report["test_in_train"],
        "images": 1,
        "under_another_label": 1,
        "by_test_class": {"basal cell carcinoma": 1},
    }
    assert report["lesions_across_splits"]["lesions"] == 1
    assert report["ham_contradictions"]["images"] == 2  # akiec filed under nevus, bcc under nevus
    markdown = (synthetic_prepared / config.AUDIT_MD_FILE).read_text()
    assert "two class folders at once: **2**" in markdown


def test_split_resolves_conflicts_by_written_policy(synthetic_dataset, synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    pool = table[~table.subset.isin(["test", "ham_test"])]
    planted = synthetic_dataset["planted"]
    manifest = _manifest(synthetic_prepared)
    hash_of = dict(zip(manifest.path, manifest.pixel_hash))
    ak = pool[pool.pixel_hash == hash_of[str(planted["ak_nevus_conflict"].resolve())]]
    assert list(ak.label) == ["actinic keratosis"]
    assert list(ak.resolution) == ["conflict settled by HAM10000 dx"]
    mel_sk = pool[pool.pixel_hash == hash_of[str(planted["mel_sk_conflict"].resolve())]]
    train = manifest[manifest.split == "Train"]
    sizes = train.groupby("label").pixel_hash.nunique()
    smaller = min(["melanoma", "seborrheic keratosis"], key=lambda c: (sizes[c], c))
    assert list(mel_sk.label) == [smaller]
    # The exact duplicate is one picture, not two.
    assert pool.pixel_hash.is_unique
    info = json.loads((synthetic_prepared / config.SPLIT_INFO_FILE).read_text())
    assert info["dropped"]["HAM10000 dx contradicts every folder label"] == 1


def test_split_drop_policy_drops_unsettled_conflicts(synthetic_prepared):
    manifest = _manifest(synthetic_prepared)
    isic_only = manifest[manifest.source == config.ISIC9_SOURCE].drop(columns=["lesion_id", "dx"])
    _, summary = split.make_split(isic_only, audit.load_ham_metadata(None), conflicts="drop")
    assert summary["dropped"]["unsettled label conflict"] == 2  # without HAM neither is settled


def test_split_is_leak_free(synthetic_dataset, synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    _assert_leak_free(table)
    assert (table.subset == "test").sum() == 9 * 3  # the official Test split stays whole


def test_split_hash_is_deterministic_and_content_sensitive(synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    info = json.loads((synthetic_prepared / config.SPLIT_INFO_FILE).read_text())
    assert split.split_hash(table) == info["content_hash"]
    moved = table.copy()
    moved.loc[moved.index[0], "label"] = "vascular lesion" if moved.label[0] != "vascular lesion" else "nevus"
    assert split.split_hash(moved) != info["content_hash"]


def test_rebalance_reaches_target_from_train_only(synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    augmented = pd.read_csv(synthetic_prepared / config.AUGMENTED_MANIFEST_FILE)
    counts = augmented.label.value_counts()
    assert (counts == 12).all() and len(counts) == config.NUM_CLASSES
    _assert_augmented_from_train_only(table, augmented)
    for path in augmented[augmented.augmented].path:
        assert str(synthetic_prepared) in path  # written to derived data, never next to raw data


def test_rebalance_is_seeded(synthetic_prepared, tmp_path):
    from data_prep.rebalance import rebalance

    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    first = rebalance(table, tmp_path / "a", target_per_class=12)
    second = rebalance(table, tmp_path / "b", target_per_class=12)
    assert list(first.source_image_id) == list(second.source_image_id)
    a = (tmp_path / "a").rglob("*.jpg")
    assert all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in a)


def test_figures_are_written(synthetic_prepared):
    for name in ("class_counts.png", "samples_train.png", "samples_augmented.png"):
        assert (synthetic_prepared / "figures" / name).stat().st_size > 5000


def test_two_sources_are_one_manifest_and_audited_together(synthetic_dataset, synthetic_prepared):
    manifest = _manifest(synthetic_prepared)
    assert set(manifest.source) == {config.ISIC9_SOURCE, config.HAM_SOURCE}
    assert list(manifest.columns) == ingest.MANIFEST_COLUMNS
    ham_only = sum(len(images) for images in synthetic_dataset["ham_only"].values())
    assert (manifest.source == config.HAM_SOURCE).sum() == ham_only + 2
    sources = json.loads((synthetic_prepared / config.AUDIT_JSON_FILE).read_text())["sources"]
    assert sources["ham_pictures_in_isic9"] == 2
    assert sources["ham_by_dx"]["nv"] == 4
    assert "Label policy for HAM10000 pictures" in (synthetic_prepared / config.AUDIT_MD_FILE).read_text()


def test_a_picture_of_both_sources_is_one_image(synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    assert table.image_id.is_unique  # the isic9 copy or the HAM10000 copy, never both
    manifest = _manifest(synthetic_prepared)
    shared = set(manifest[manifest.source == config.HAM_SOURCE].image_id) & set(
        manifest[manifest.source == config.ISIC9_SOURCE].image_id
    )
    assert len(shared) == 2
    in_pool = table[table.image_id.isin(shared) & ~table.subset.isin(["ham_test"])]
    assert (in_pool.source == config.ISIC9_SOURCE).all()


def test_lesion_photographed_several_times_stays_on_one_side(synthetic_dataset, synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    for lesion, images in synthetic_dataset["ham_only"].items():
        subsets = set(table[table.image_id.isin(images)].subset)
        assert len(subsets) <= 1, (lesion, subsets)
    several = next(images for images in synthetic_dataset["ham_only"].values() if len(images) == 3)
    assert table.image_id.isin(several).sum() == 3


def test_ham_test_is_held_out_by_dx_and_akiec_is_never_trained(synthetic_prepared):
    table = pd.read_csv(synthetic_prepared / config.SPLIT_FILE)
    ham_test = table[table.subset == "ham_test"]
    assert len(ham_test) and (ham_test.source == config.HAM_SOURCE).all()
    assert set(ham_test.dx) <= set(config.HAM_DX_CODES)
    pool = table[table.subset.isin(["train", "val"])]
    assert "akiec" not in set(pool[pool.source == config.HAM_SOURCE].dx)
    assert set(pool.label) <= set(config.CLASS_NAMES)
    info = json.loads((synthetic_prepared / config.SPLIT_INFO_FILE).read_text())
    assert info["policy"]["ham_dx_training_label"] == config.HAM_DX_TRAINING_LABEL


def _assert_leak_free(table: pd.DataFrame) -> None:
    """No picture (image id or pixel hash) or lesion of a held-out subset in train, nor of a test in val."""
    for fitted, held_out in ((["train"], ["val", "test", "ham_test"]), (["val"], ["test", "ham_test"])):
        a, b = table[table.subset.isin(fitted)], table[table.subset.isin(held_out)]
        assert not set(a.pixel_hash) & set(b.pixel_hash)
        assert not set(a.image_id) & set(b.image_id)
        assert not set(a.lesion_id.dropna()) & set(b.lesion_id.dropna())
    test, ham_test = table[table.subset == "test"], table[table.subset == "ham_test"]
    assert not set(test.lesion_id.dropna()) & set(ham_test.lesion_id.dropna())


def _assert_augmented_from_train_only(table: pd.DataFrame, augmented: pd.DataFrame) -> None:
    train_hashes = set(table[table.subset == "train"].pixel_hash)
    held_out = set(table[table.subset != "train"].pixel_hash)
    assert set(augmented.source_pixel_hash) <= train_hashes
    assert not set(augmented.source_pixel_hash) & held_out


def test_audit_without_ham10000_metadata_finds_no_label_contradictions():
    """isic9 alone: no row has a dx, and the check must say so rather than fail."""
    from data_prep.audit import _ham_contradictions

    rows = pd.DataFrame({"split": ["Train"], "label": ["nevus"], "dx": [None]})
    assert _ham_contradictions(rows) == {"images": 0, "by_label_and_dx": {}}


def test_ingest_says_when_the_ham10000_data_is_missing(synthetic_dataset, tmp_path, capsys, caplog):
    base = ["ingest", "--data-dir", str(synthetic_dataset["root"]), "--work-dir", str(tmp_path)]
    # Images without their metadata cannot be labelled or grouped by lesion: an error naming the file.
    missing_csv = tmp_path / "no_such.csv"
    args = [*base, "--ham-dir", str(synthetic_dataset["ham_dir"]), "--ham-metadata", str(missing_csv)]
    assert main(args) == 2
    assert f"{missing_csv} not found" in capsys.readouterr().err
    # No images: isic9 alone is allowed, with a warning that it is not the committed model's data.
    assert main([*base, "--ham-dir", str(tmp_path / "no_such_dir")]) == 0
    assert "isic9 only" in caplog.text
