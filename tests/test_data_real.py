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


def test_real_split_is_leak_free(real_prepared):
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    _assert_leak_free(table)
    assert (table.subset == "test").sum() == 118
    assert set(table[table.subset == "val"].label) == set(config.CLASS_NAMES)


def test_real_augmented_samples_derive_from_train_only(real_prepared):
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    augmented = pd.read_csv(real_prepared / config.AUGMENTED_MANIFEST_FILE)
    _assert_augmented_from_train_only(table, augmented)
    assert (augmented.label.value_counts() >= config.REBALANCE_TARGET_PER_CLASS).all()
