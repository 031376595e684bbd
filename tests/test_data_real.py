"""data_prep on the real ISIC data: the known defects are found and the split is leak-free."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from model import config
from tests.test_data_prep import _assert_augmented_from_train_only, _assert_leak_free

pytestmark = pytest.mark.integration


def test_real_audit_counts(real_prepared):
    report = json.loads((real_prepared / config.AUDIT_JSON_FILE).read_text())
    assert sum(report["images"]["Train"].values()) == 2241
    assert sum(report["images"]["Test"].values()) == 118
    conflicts = report["train_label_conflicts"]
    assert conflicts["images"] == 137
    assert conflicts["by_pair"] == {"melanoma + seborrheic keratosis": 75, "actinic keratosis + nevus": 62}
    assert report["test_in_train"]["under_another_label"] == 18


def test_real_sources_are_audited_together(real_prepared):
    sources = json.loads((real_prepared / config.AUDIT_JSON_FILE).read_text())["sources"]
    if config.HAM_SOURCE not in sources["by_source_and_class"]:
        pytest.skip(f"HAM10000 images not found at {config.HAM_IMAGES_DIR} (set HAM_IMAGES_DIR)")
    assert sum(sources["ham_by_dx"].values()) == 10015
    assert sources["ham_pictures_in_isic9"] == 1437
    assert sources["ham_lesions"] == 7470


def test_real_split_is_leak_free(real_prepared):
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    _assert_leak_free(table)
    assert (table.subset == "test").sum() == 118
    assert set(table[table.subset == "val"].label) == set(config.CLASS_NAMES)
    assert table.image_id.is_unique


def test_real_ham_test_is_a_stratified_share_of_ham_lesions(real_prepared):
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    ham_test = table[table.subset == "ham_test"]
    if ham_test.empty:
        pytest.skip(f"HAM10000 images not found at {config.HAM_IMAGES_DIR} (set HAM_IMAGES_DIR)")
    ham = pd.read_csv(config.HAM_METADATA_PATH)
    isic_test_lesions = set(table[table.subset == "test"].lesion_id.dropna())
    candidates = ham[~ham.lesion_id.isin(isic_test_lesions)]
    share = ham_test.lesion_id.nunique() / candidates.lesion_id.nunique()
    assert 0.12 < share < 0.18
    assert set(ham_test.dx) == set(config.HAM_DX_CODES)  # every dx code is represented
    # Every image of a held-out lesion is held out with it.
    assert len(ham_test) == ham.lesion_id.isin(set(ham_test.lesion_id)).sum()


def test_real_augmented_samples_derive_from_train_only(real_prepared):
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    augmented = pd.read_csv(real_prepared / config.AUGMENTED_MANIFEST_FILE)
    _assert_augmented_from_train_only(table, augmented)
    assert (augmented.label.value_counts() >= config.REBALANCE_TARGET_PER_CLASS).all()
