"""The committed image gate on real held-out data: every goal of issue 19, measured afresh."""

from __future__ import annotations

import json

import pytest

from model import config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def figures(committed_model_dir, request):
    """issue 19's figures of the committed gate, measured through the served check (LiteRT)."""
    from model.gate import held_out_figures
    from tests.conftest import real_data_dir
    from webapp.gate import Gate

    real_data_dir()
    for folder in (config.NONLESION_DIR, config.SMARTPHONE_DIR):
        if not folder.is_dir():
            pytest.skip(f"gate data not found at {folder} (set NONLESION_DIR / SMARTPHONE_DIR)")
    # data_prep's split names the Test subsets; without a prepared one, prepare it (as CI does).
    work_dir = config.WORK_DIR
    if not (work_dir / config.SPLIT_FILE).is_file():
        work_dir = request.getfixturevalue("real_prepared")
    metadata = json.loads((committed_model_dir / config.METADATA_FILE).read_text())
    return held_out_figures(Gate.from_metadata(committed_model_dir, metadata), work_dir)


def test_non_lesion_pictures_are_refused(figures):
    assert figures["everyday_refused"]["images"] > 1000 and figures["generated_refused"]["images"] >= 500
    assert figures["non_lesion_refused"]["share"] >= 0.95


@pytest.mark.xfail(
    strict=True,
    reason="committed gate (g10): 70 of 82 held-out smartphone photos refused (0.854), goal 0.90; it trains "
    "on the phone photos of two thirds of the patients (g4, on one third: 72 of 82). Known miss of issue 19.",
)
def test_held_out_smartphone_photos_are_refused(figures):
    assert figures["smartphone_refused"]["images"] >= 50
    assert figures["smartphone_refused"]["share"] >= 0.90


def test_ham10000_held_out_test_images_are_rarely_refused(figures):
    if "dermoscopy_refused_ham_test" not in figures:
        pytest.skip("data_prep defines no HAM10000 held-out test (subset ham_test) in this split")
    assert figures["dermoscopy_refused_ham_test"]["share"] <= 0.02


@pytest.mark.xfail(
    strict=True,
    reason="committed gate (g10 + runs G18 and CF): 3 of 118 isic9 Test images refused (0.025, goal 0.02), "
    "2 of them melanomas (ISIC_0000004, ISIC_0000036): early ISIC Archive pictures inside a dermatoscope's "
    "black surround, refused as poor_quality asking for the inside of the field, because the classifier "
    "misjudges such pictures (run CF). Known miss of issue 19.",
)
def test_isic9_test_images_are_rarely_refused_and_no_melanoma_is(figures):
    assert figures["dermoscopy_refused_test"]["images"] == 118
    assert figures["melanomas_refused_test"]["images"] == 16
    assert figures["dermoscopy_refused_test"]["share"] <= 0.02
    assert figures["melanomas_refused_test"]["refused"] == 0


def test_unusable_versions_of_test_images_are_caught(figures):
    assert figures["unusable_caught"]["share"] >= 0.90
    assert set(figures["unusable_caught_by_version"]) == {
        "blur radius 8",
        "brightness x0.1",
        "brightness x4",
        "48 px",
        "flat",
    }


def test_black_and_white_versions_of_test_images_are_refused(figures):
    """The classifier reads colour: without it, it leans to benign (run G16 in docs/EXPERIMENTS.md)."""
    assert figures["faded_caught_by_version"]["greyscale"]["share"] >= 0.99


def test_test_images_seen_through_a_dermatoscope_field_are_refused_asking_for_the_inside(figures):
    """The classifier misjudges lesions inside a round black surround (runs G18 and CF).

    Bound written before this gate's held-out figure was measured.
    """
    assert set(figures["field_of_view_refused_by_version"]) == {"field of view 1.0", "field of view 0.8"}
    assert figures["field_of_view_refused"]["share"] >= 0.95


def test_clean_test_images_are_rarely_called_poor_quality(figures):
    assert figures["clean_flagged_poor_quality"]["share"] <= 0.01


def test_the_model_card_figures_are_what_the_committed_gate_does(committed_model_dir, figures):
    """The recorded figures (metadata, model card, /about) match a fresh measurement of the same data."""
    gate = json.loads((committed_model_dir / config.METADATA_FILE).read_text())[config.GATE_METADATA_KEY]
    recorded = gate["figures"]
    names = ("non_lesion_refused", "smartphone_refused", "dermoscopy_refused_test", "melanomas_refused_test")
    for name in names:
        assert recorded[name] == figures[name], name
