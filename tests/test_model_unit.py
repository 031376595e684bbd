"""Model builder, colour constancy, input pipeline, calibration, metrics and export on tiny inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model import config


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from model.network import build_model

    keras.utils.set_random_seed(1)
    return build_model(width=4)


def test_build_model_shapes_and_probabilities(tiny_model):
    assert tiny_model.input_shape == (None, *config.IMAGE_SIZE, 3)
    x = np.random.default_rng(0).uniform(0, 255, (3, *config.IMAGE_SIZE, 3)).astype("float32")
    p = tiny_model.predict(x, verbose=0)
    assert p.shape == (3, config.NUM_CLASSES)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    layer_types = {type(layer).__name__ for layer in tiny_model.layers}
    assert {"Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout"} <= layer_types
    # Four halvings (strided stem, three pooled blocks): the heat map's grid is input / 16.
    assert tiny_model.get_layer("features").output.shape[1:3] == tuple(s // 16 for s in config.IMAGE_SIZE)


def test_build_model_is_pure_and_width_scales_parameters():
    from model.network import build_model

    assert build_model(width=8).count_params() > build_model(width=4).count_params()


def test_deep_width_scale_widens_only_the_low_resolution_stages():
    from model.network import build_model

    plain, wide = build_model(width=4), build_model(width=4, deep_width_scale=1.5)
    assert wide.get_layer("block3_0_conv").filters == 24 and wide.get_layer("features_conv").filters == 48
    assert plain.get_layer("features_conv").filters == 32
    for early in ("stem_conv", "block1_0_conv", "block2_1_conv"):
        assert wide.get_layer(early).filters == plain.get_layer(early).filters


def test_shades_of_grey_removes_a_colour_cast():
    from model.network import ShadesOfGrey

    rng = np.random.default_rng(0)
    image = rng.uniform(60, 200, (1, 32, 32, 3)).astype("float32")
    cast = image * np.array([1.0, 0.8, 0.6], dtype="float32")
    layer = ShadesOfGrey()
    plain, corrected = np.asarray(layer(image)), np.asarray(layer(cast))
    # The cast's colour goes; its overall darkening (one scalar) stays, as intended.
    np.testing.assert_allclose(corrected / corrected.mean(), plain / plain.mean(), atol=2e-3)
    channel_means = corrected.mean(axis=(0, 1, 2))
    assert channel_means.max() / channel_means.min() < 1.05  # the uncorrected cast is 1.0 : 0.6


def test_temperature_divides_logits(tiny_model):
    from scipy.special import softmax

    from model.network import logits_model, with_temperature

    x = np.random.default_rng(1).uniform(0, 255, (2, *config.IMAGE_SIZE, 3)).astype("float32")
    logits = logits_model(tiny_model).predict(x, verbose=0)
    calibrated = with_temperature(tiny_model, 2.5).predict(x, verbose=0)
    np.testing.assert_allclose(calibrated, softmax(logits / 2.5, axis=1), atol=1e-5)


def _dihedral_views(images: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square for a (B, H, W, C) batch, by NumPy (not the network's own code)."""
    return [
        np.flip(np.rot90(images, k, axes=(1, 2)), axis=2) if m else np.rot90(images, k, axes=(1, 2))
        for m in (0, 1)
        for k in range(4)
    ]


def test_class_maps_average_to_the_orientation_averaged_logits(tiny_model):
    from scipy.special import softmax

    from model.network import averaged_logits_model, logits_model, serving_model

    x = np.random.default_rng(2).uniform(0, 255, (2, *config.IMAGE_SIZE, 3)).astype("float32")
    probabilities, maps = serving_model(tiny_model).predict(x, verbose=0)
    averaged = averaged_logits_model(tiny_model).predict(x, verbose=0)
    # The served logits are the single-view logits averaged over the 8 views of the image.
    per_view = [
        logits_model(tiny_model).predict(np.ascontiguousarray(v), verbose=0) for v in _dihedral_views(x)
    ]
    np.testing.assert_allclose(averaged, np.mean(per_view, axis=0), atol=1e-4)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), averaged, atol=1e-4)
    np.testing.assert_allclose(probabilities, softmax(averaged, axis=1), atol=1e-6)  # temperature 1


def test_served_model_gives_the_same_answer_for_all_eight_orientations(tiny_model):
    from model.network import serving_model, with_temperature

    # A low temperature magnifies the logits, so a single view's dependence on orientation shows.
    model = with_temperature(tiny_model, 0.05)
    x = np.random.default_rng(6).uniform(0, 255, (3, *config.IMAGE_SIZE, 3)).astype("float32")
    views = [np.ascontiguousarray(v) for v in _dihedral_views(x)]
    single = [model.predict(v, verbose=0) for v in views]
    assert max(np.abs(p - single[0]).max() for p in single) > 1e-3  # one view alone is not invariant
    served = [serving_model(model).predict(v, verbose=0) for v in views]
    upright_probabilities, upright_maps = served[0]
    for (probabilities, maps), turned_maps in zip(served, _dihedral_views(upright_maps)):
        np.testing.assert_allclose(probabilities, upright_probabilities, atol=1e-5, rtol=0)
        np.testing.assert_allclose(maps, turned_maps, atol=1e-4, rtol=0)  # the heat map turns with the photo


def test_input_pipeline_batches_decoded_images(synthetic_prepared):
    from model import data

    table = data.read_training_set(synthetic_prepared)
    labels = data.label_indices(table.label)
    dataset = data.make_dataset(table.path, labels, batch_size=16, training=True)
    images, batch_labels = next(iter(dataset))
    assert images.shape == (16, *config.IMAGE_SIZE, 3)
    assert images.dtype.name == "float32"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 255.0
    assert set(np.asarray(batch_labels)) <= set(range(config.NUM_CLASSES))


def test_eval_pipeline_matches_shared_preprocessing(synthetic_prepared):
    from model import data
    from model.preprocessing import load_image_file

    table = data.read_subset("val", synthetic_prepared)
    dataset = data.make_dataset(table.path[:4], data.label_indices(table.label[:4]), batch_size=4)
    images, _ = next(iter(dataset))
    expected = np.stack([load_image_file(p) for p in table.path[:4]])
    np.testing.assert_array_equal(np.asarray(images), expected)


def test_image_sources_follow_ham_metadata_and_archive_ids(synthetic_prepared):
    from model import data

    table = data.read_training_set(synthetic_prepared)
    sources = data.image_sources(table, synthetic_prepared)
    split = data.read_subset("train", synthetic_prepared).set_index("image_id")
    for image_id, source in zip(table.source_image_id, sources):
        if pd.notna(split.lesion_id.get(image_id)):
            assert source == "HAM10000"
        else:
            early = int(image_id.split("_")[1]) < config.ISIC_ARCHIVE_EARLY_IDS_END
            assert source == ("ISIC archive, early ids" if early else "ISIC archive, later ids")
    assert "HAM10000" in set(sources)


def test_random_orientation_draws_all_eight_symmetries():
    import tensorflow as tf

    from model.data import random_orientation

    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)  # no symmetry of its own
    seen = {
        np.asarray(random_orientation(tf.constant(image), tf.constant([7, i], tf.int64))).tobytes()
        for i in range(200)
    }
    assert len(seen) == 8
    assert image.tobytes() in seen


def test_photometric_jitter_stays_in_range_and_varies_per_image():
    import tensorflow as tf

    from model.data import photometric_jitter

    images = np.full((16, 8, 8, 3), 128, dtype=np.uint8)
    jittered = np.asarray(photometric_jitter(tf.constant(images), tf.constant([1, 2], tf.int64)))
    assert jittered.dtype == np.float32 and jittered.shape == images.shape
    assert jittered.min() >= 0.0 and jittered.max() <= 255.0
    assert len(np.unique(jittered[:, 0, 0, 0])) == 16  # each image its own draw
    again = np.asarray(photometric_jitter(tf.constant(images), tf.constant([1, 2], tf.int64)))
    np.testing.assert_array_equal(jittered, again)  # stateless: the seed decides


def test_scaled_saturation_matches_pil_and_keeps_grey_grey():
    from PIL import ImageEnhance

    from model.preprocessing import scaled_saturation

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    for factor in (0.0, 0.5, 1.0, 1.5):
        pil = np.asarray(ImageEnhance.Color(Image.fromarray(pixels)).enhance(factor), dtype=np.float32)
        ours = scaled_saturation(pixels.astype(np.float32), factor)
        assert np.abs(ours - pil).max() <= 1.0  # PIL rounds to integers
    grey = np.repeat(pixels[..., :1], 3, axis=-1).astype(np.float32)
    np.testing.assert_allclose(scaled_saturation(grey, 0.5), grey, atol=1e-3)
    faded = scaled_saturation(pixels.astype(np.float32), 0.0)
    np.testing.assert_allclose(faded[..., 0], faded[..., 2], atol=1e-3)


def test_colour_probe_reports_what_fading_does_to_the_flag():
    from model.evaluate import MALIGNANT, MELANOMA, NEVUS, colour_probe

    class RedMeansMelanoma:
        """A stand-in model: the redder the picture (red minus green), the likelier melanoma."""

        def predict(self, images, batch_size=64, verbose=0):
            redness = np.clip((images[..., 0] - images[..., 1]).mean(axis=(1, 2)) / 100, 0, 1)
            probabilities = np.zeros((len(images), len(config.CLASS_NAMES)))
            probabilities[:, MELANOMA] = redness
            probabilities[:, NEVUS] = 1 - redness
            return probabilities

    red, brown = [200, 60, 60], [120, 100, 90]
    images = np.array([np.full((8, 8, 3), c, dtype=np.float32) for c in (red, red, brown, brown)])
    labels = np.array(
        [MELANOMA, MELANOMA, config.CLASS_NAMES.index("nevus"), config.CLASS_NAMES.index("nevus")]
    )
    probe = colour_probe(RedMeansMelanoma(), images, labels, threshold=0.8)
    assert MELANOMA in MALIGNANT and set(probe) == {"1", "0.75", "0.5"}
    assert probe["1"]["malignant_sensitivity"] == 1.0  # redness 1.4 -> 1: flagged
    assert probe["0.5"]["malignant_sensitivity"] == 0.0  # redness 0.7: below 0.8, missed
    assert probe["0.5"]["malignant_specificity"] == 1.0


def test_field_of_view_probe_reports_what_a_dermatoscope_field_does_to_the_flag(tmp_path):
    from model.evaluate import MELANOMA, NEVUS, field_of_view_probe
    from model.gate import FIELD_OF_VIEW_VERSIONS

    class DarkMeansMelanoma:
        """A stand-in model: a picture darker than 120 on average is a melanoma."""

        def predict(self, images, batch_size=64, verbose=0):
            dark = (images.mean(axis=(1, 2, 3)) < 120).astype(float)
            probabilities = np.zeros((len(images), len(config.CLASS_NAMES)))
            probabilities[:, MELANOMA], probabilities[:, NEVUS] = dark, 1 - dark
            return probabilities

    paths = []
    for i, grey in enumerate((60, 60, 200, 200)):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (180, 180), (grey, grey, grey)).save(paths[-1])
    labels = np.array([MELANOMA, MELANOMA, NEVUS, NEVUS])
    probe = field_of_view_probe(DarkMeansMelanoma(), paths, labels, threshold=0.5)
    assert set(probe) == set(FIELD_OF_VIEW_VERSIONS)
    # Black around a bright nevus: 79% of the frame left (mean about 158), then 50% (about 103).
    assert probe["field of view 1.0"]["malignant_specificity"] == 1.0
    assert probe["field of view 0.8"]["malignant_specificity"] == 0.0
    assert probe["field of view 0.8"]["malignant_sensitivity"] == 1.0


def test_fit_temperature_recovers_a_known_temperature():
    from model.calibration import expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 3, (4000, 5))
    labels = np.array([rng.choice(5, p=np.exp(t) / np.exp(t).sum()) for t in true_logits])
    overconfident = true_logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    from scipy.special import softmax

    assert expected_calibration_error(softmax(overconfident / temperature, axis=1), labels) < (
        expected_calibration_error(softmax(overconfident, axis=1), labels)
    )


def test_metrics_on_a_known_prediction():
    from model.evaluate import choose_threshold, evaluate

    labels = np.arange(config.NUM_CLASSES).repeat(4)
    probabilities = np.full((len(labels), config.NUM_CLASSES), 0.01)
    probabilities[np.arange(len(labels)), labels] = 0.92  # every image right, confidently
    probabilities[0] = np.roll(probabilities[0], 1)  # one wrong
    threshold = choose_threshold(probabilities, labels)
    metrics = evaluate(probabilities, labels, threshold)
    assert metrics["accuracy"] == pytest.approx(35 / 36)
    assert metrics["balanced_accuracy"] == pytest.approx((8 + 0.75) / 9)
    assert metrics["melanoma_vs_rest_auc"] == pytest.approx(1.0)
    assert metrics["malignant_sensitivity"] >= 0.85
    low, high = metrics["intervals_95"]["accuracy"]
    assert low <= metrics["accuracy"] <= high
    assert np.array(metrics["confusion_matrix"]).sum() == len(labels)


def test_litert_export_matches_the_served_keras_model(tiny_model_dir, synthetic_dataset):
    from ai_edge_litert.interpreter import Interpreter

    from model.export import load_keras_model
    from model.network import serving_model
    from model.preprocessing import load_image_file

    files = synthetic_dataset["files"]["Test/nevus"] + synthetic_dataset["files"]["Test/melanoma"]
    images = np.stack([load_image_file(p) for p in files])
    # The served model: the .h5's single-view network averaged over the 8 orientations.
    want_probabilities, want_maps = serving_model(load_keras_model(tiny_model_dir)).predict(images, verbose=0)
    interpreter = Interpreter(model_path=str(tiny_model_dir / config.MODEL_TFLITE_FILE))
    interpreter.allocate_tensors()
    outputs = {len(d["shape"]): d["index"] for d in interpreter.get_output_details()}
    for image, probabilities, maps in zip(images, want_probabilities, want_maps):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(outputs[2])[0], probabilities, atol=1e-4, rtol=0)
        np.testing.assert_allclose(interpreter.get_tensor(outputs[4])[0], maps, atol=1e-4, rtol=0)
    # The metadata describes the class-map output the export really has.
    metadata = json.loads((tiny_model_dir / config.METADATA_FILE).read_text())
    assert [int(d) for d in interpreter.get_tensor(outputs[4]).shape[1:]] == metadata["outputs"]["class_maps"]


def test_crop_trained_model_becomes_the_fixed_size_model():
    from model.network import build_model, with_temperature

    flexible = build_model(input_size=(None, None), width=4)
    x = np.random.default_rng(3).uniform(0, 255, (2, *config.IMAGE_SIZE, 3)).astype("float32")
    fixed = with_temperature(flexible, 1.0)
    assert fixed.input_shape == (None, *config.IMAGE_SIZE, 3)
    np.testing.assert_allclose(fixed.predict(x, verbose=0), flexible.predict(x, verbose=0), atol=1e-6)
    assert flexible.predict(x[:, :96, :96], verbose=0).shape == (2, config.NUM_CLASSES)


def test_training_crops_have_the_crop_size(synthetic_prepared):
    from model import data

    table = data.read_training_set(synthetic_prepared)
    dataset = data.make_dataset(table.path, data.label_indices(table.label), 8, training=True, crop_size=96)
    images, _ = next(iter(dataset))
    assert images.shape == (8, 96, 96, 3)


def test_model_card_lists_the_measures_the_run_used():
    from model.model_card import confounding_text

    plain = confounding_text({"crop_size": 0})
    assert "crops" not in plain and "colour constancy" in plain
    full = confounding_text({"crop_size": 112})
    assert "112-pixel crops" in full and "colour constancy" in full
    assert "loss weights" not in full  # they lost on validation (runs W0, W1) and left the recipe
    assert "averages all 8 flips/rotations" in plain and "melanomas and nevi from HAM10000" in plain


def _card_metadata(metrics: dict) -> dict:
    """Metadata as training and evaluation write it, with a two-source split summary."""
    from dataclasses import asdict

    from model import export, train

    training = asdict(train.TrainConfig()) | {
        "temperature": 1.2,
        "calibration": {
            "fitted_temperature": 1.2,
            "val_ece_before": 0.09,
            "val_ece_after": 0.05,
            "applied": True,
        },
        "best_epoch": 28,
        "epochs_run": 30,
        "best_val_balanced_accuracy": 0.61,
        "wall_seconds": 1800.0,
        "images_per_second": 150.0,
        "train_images": 9000,
        "selection_run": None,
    }
    counts = {subset: {name: 10 for name in config.CLASS_NAMES} for subset in ("train", "val", "test")}
    counts["ham_test"] = {"nevus": 958, "melanoma": 159, "(dx akiec)": 41}
    split = {
        "content_hash": "ab" * 32,
        "counts": counts,
        "counts_by_source": {"train": {"ham10000": 6307, "isic9": 1567}, "ham_test": {"ham10000": 1414}},
        "policy": {"ham_dx_training_label": config.HAM_DX_TRAINING_LABEL},
        "dropped": {"picture also in isic9 Test": 5, "lesion also in HAM10000 held-out test": 0},
        "resolutions": {"HAM10000 dx policy": 7354},
    }
    metadata = export.build_metadata(training, {"split_content_hash": split["content_hash"], "split": split})
    return metadata | {"metrics": metrics}


def test_model_card_shows_both_test_sets_and_which_floors_are_met():
    from model.model_card import LIMITATIONS, floor_checks, render
    from tests.metrics_examples import two_test_sets_metrics

    metrics = two_test_sets_metrics()
    early = {"images": 40, "accuracy": 0.45, "melanomas": 8, "melanoma_recall": 0.25}
    metrics["test"]["by_source"]["ISIC archive, early ids"] = early
    card = render(_card_metadata(metrics), "# Data audit\n\n## Sources\n\naudited")
    # Met and missed follow the figures: a floor reached exactly is met; calibration error is a ceiling.
    expected_rows = [
        "| isic9 official Test | accuracy | at least 0.60 | 0.600 | 0.55 to 0.65 | yes |",
        "| isic9 official Test | melanoma-vs-nevus ROC AUC | at least 0.75 | 0.700 | 0.65 to 0.75 | **no** |",
        "| isic9 official Test | expected calibration error | at most 0.10 | 0.120 | 0.07 to 0.17 | **no** |",
        "| isic9 official Test | orientation agreement | at least 0.95 | 1.000 |  | yes |",
        "| HAM10000 held-out test | accuracy | at least 0.78 | 0.700 | 0.65 to 0.75 | **no** |",
        "| HAM10000 held-out test | melanoma-vs-nevus ROC AUC | at least 0.85 | 0.900 | 0.85 to 0.95 | yes |",
        "| HAM10000 held-out test | expected calibration error | at most 0.08 | 0.050 | 0.00 to 0.10 | yes |",
    ]
    for row in expected_rows:
        assert row in card
    assert sum(row["met"] for row in floor_checks(metrics)) == 7
    assert "It meets 7 of the 12 floors" in card
    # Validation and both test sets side by side, each test figure with its interval.
    assert "| figure | validation | isic9 official Test | HAM10000 held-out test | what it says |" in card
    assert "| accuracy | 0.810 | 0.600 (0.55 to 0.65) | 0.700 (0.65 to 0.75) |" in card
    assert "| orientation agreement | n/a | 1.000 | 0.999 |" in card
    assert "| akiec (actinic keratosis + squamous cell carcinoma) | 0.75 | 0.80 |" in card
    assert "| HAM10000 held-out test | HAM10000 | 1414 | 0.70 | 9 | 0.600 |" in card
    # What remains weak names the misses and the weak classes, not the floors that are met.
    assert "Floor missed on the isic9 official Test: expected calibration error 0.120" in card
    assert "Floor missed on the HAM10000 held-out test: accuracy 0.700, the bar is at least 0.78." in card
    assert "Floor missed on the HAM10000 held-out test: expected calibration error" not in card
    assert "Recall below 50% on the isic9 official Test: seborrheic keratosis 0.00" in card
    assert "accuracy ranges from 0.45 (ISIC archive, early ids, 40 images) to 0.60 (HAM10000, 118" in card
    assert "On the HAM10000 held-out test, accuracy ranges" not in card  # one source only
    # The data: both sources, the dx policy, the subsets by class and by source.
    assert "| akiec | not trained on (dx names no single class) |" in card
    assert "| bkl | pigmented benign keratosis |" in card
    assert "| HAM10000 held-out test | 0 | 0 | 0 | 159 | 958 | 0 | 0 | 0 | 0 | 41 | 1158 |" in card
    assert "| train | 6307 | 1567 |" in card and "#### Sources" in card
    assert "| accuracy | 0.576 | 0.600 |" in card  # against the isic9-only model
    assert all(line in card for line in LIMITATIONS)
    # What fading costs, measured: the colour probe's table and its sentence in the limitations.
    assert "| isic9 official Test | x0.5 | 0.600 | 0.700 | 0.800 |" in card
    assert (
        "the flag catches 83% in full colour and 60% at half saturation on the isic9 official Test." in card
    )
    for removed in ("MixStyle", "vignette", "CutMix", "moving average", "smoothing"):
        assert removed not in card


def test_a_smoke_runs_card_says_it_is_no_model():
    from model.model_card import render
    from tests.metrics_examples import two_test_sets_metrics

    metadata = _card_metadata(two_test_sets_metrics())
    assert "A smoke run" not in render(metadata, "")
    metadata["training"] |= {"limit_per_class": 12, "epochs_run": 2}
    card = render(metadata, "")
    assert "**A smoke run** (`--quick`: 2 epochs on at most 12 training pictures per class)" in card
    assert card.index("A smoke run") < card.index("## In short")


def test_model_card_without_a_ham10000_test_says_so():
    from model.model_card import meets_floor, render
    from tests.metrics_examples import two_test_sets_metrics

    metrics = two_test_sets_metrics()
    del metrics["ham_test"]
    card = render(_card_metadata(metrics), "")
    assert "| HAM10000 held-out test | accuracy | at least 0.78 | not measured |  | **no** |" in card
    assert "No HAM10000 held-out test was scored" in card
    assert "| figure | validation | isic9 official Test | what it says |" in card
    assert not meets_floor("accuracy", None, 0.5)
    assert meets_floor("expected_calibration_error", 0.08, 0.08)
    assert not meets_floor("expected_calibration_error", 0.081, 0.08)
    assert "Not evaluated yet" in render(_card_metadata({}), "")


def test_frame_probe_tells_a_border_reader_from_a_centre_reader():
    from model.evaluate import MELANOMA, frame_probe

    # Six HAM10000 images (dark border, label 0) and six later-archive ones (bright border).
    images = np.full((12, 40, 40, 3), 60.0, dtype=np.float32)
    images[6:] = 220.0
    images[:, 10:30, 10:30] = 120.0  # the same lesion in every centre
    labels = np.zeros(12, dtype=int)
    sources = np.array(["HAM10000"] * 6 + ["ISIC archive, later ids"] * 6)

    class Reader:  # a stand-in model: melanoma if the chosen pixel is bright, class 0 otherwise
        def __init__(self, row):
            self.row = row

        def predict(self, batch, **_):
            calls = np.where(batch[:, self.row, self.row, 0] > 150, MELANOMA, 0)
            return np.eye(config.NUM_CLASSES)[calls]

    border = frame_probe(Reader(row=0), images, labels, sources)
    assert border["images"] == 6
    assert border["own"] == {"accuracy": 1.0, "called_melanoma": 0.0}
    assert border["control_borders"] == border["own"]
    assert border["archive_borders"] == {"accuracy": 0.0, "called_melanoma": 1.0}
    # The reverse: archive pictures lose their bright border, and with it the melanoma call.
    assert border["archive_pictures"]["images"] == 6
    assert border["archive_pictures"]["own"] == {"accuracy": 0.0, "called_melanoma": 1.0}
    assert border["archive_pictures"]["ham_borders"] == {"accuracy": 1.0, "called_melanoma": 0.0}
    centre = frame_probe(Reader(row=20), images, labels, sources)
    assert centre["archive_borders"] == centre["control_borders"] == centre["own"]
    assert centre["archive_pictures"]["ham_borders"] == centre["archive_pictures"]["own"]
    assert "archive_pictures" not in frame_probe(Reader(row=0), images[:6], labels[:6], sources[:6])
    assert frame_probe(Reader(row=0), images[6:], labels[6:], sources[6:]) is None


def test_model_card_reports_the_frame_probe():
    from model.model_card import _frame_probe_text

    probe = {
        "images": 191,
        "border_share": 0.1,
        "own": {"accuracy": 0.681, "called_melanoma": 0.042},
        "archive_borders": {"accuracy": 0.356, "called_melanoma": 0.309},
        "control_borders": {"accuracy": 0.314, "called_melanoma": 0.304},
    }
    text = _frame_probe_text(probe)
    assert "191 HAM10000" in text and "outer 10% of the" in text
    assert "| borders of later-archive images | 0.356 | 0.309 |" in text
    assert "(control) | 0.314 | 0.304 |" in text
    assert "The reverse" not in text  # older metadata has no reverse probe
    probe["archive_pictures"] = {
        "images": 99,
        "own": {"accuracy": 0.657, "called_melanoma": 0.4},
        "ham_borders": {"accuracy": 0.364, "called_melanoma": 0.25},
    }
    text = _frame_probe_text(probe)
    assert "the 99 ISIC-archive validation images with HAM10000 borders" in text
    assert "| borders of HAM10000 images | 0.364 | 0.250 |" in text
    assert _frame_probe_text(None) == ""


def test_progressive_resizing_trains_on_small_crops_then_on_full_crops(synthetic_prepared):
    import tensorflow as tf

    from model import data, network, train

    assert train.training_crop_size(train.TrainConfig(crop_size=64, small_crop_size=0)) == 64  # off
    settings = train.TrainConfig(crop_size=64, small_crop_size=48, small_crop_epochs=2, batch_size=8)
    crop_size = train.training_crop_size(settings)
    table = data.read_training_set(synthetic_prepared)
    labels = data.label_indices(table.label)
    dataset = train.training_dataset(table.path, labels, settings, crop_size=crop_size)
    sides = []  # the side of every batch the model trains on, in order

    def record(images):
        sides.append(images.shape[1])
        return images

    def recorded(images, labels):
        images = tf.numpy_function(record, [images], tf.float32)
        return tf.ensure_shape(images, [None, None, None, 3]), labels

    dataset = dataset.map(recorded)
    model = network.build_model(input_size=(None, None), width=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    schedule = train.fit_callbacks(settings, train.ValidationSelection([], [], 1, 1), crop_size)[0]
    model.fit(dataset, epochs=3, verbose=0, callbacks=[schedule])
    per_epoch = -(-len(table) // 8)
    # Keras starts each epoch's pipeline after the callback set the size: no batch of a wrong size.
    assert sides == [48] * (2 * per_epoch) + [64] * per_epoch


def test_model_card_mentions_progressive_resizing_only_when_used():
    from model.model_card import _weighting_text

    assert "Progressive" not in _weighting_text({"crop_size": 112})
    text = _weighting_text({"crop_size": 112, "small_crop_size": 80, "small_crop_epochs": 36})
    assert "first 36 epochs used 80x80 crops" in text


def test_model_card_states_the_loss_weights_a_run_trained_with():
    from model.model_card import _weighting_text

    assert _weighting_text({"weighting_power": 0.0}).startswith("No loss weights")
    # A run from before the comparison (H3, R1) trained with weights: its card must not deny them.
    assert "count^0.5" in _weighting_text({"weighting_power": 0.5})
    # Power 1 (run W1) gave every cell the same total weight: count^0, not count^1.
    assert "count^0 in total" in _weighting_text({"weighting_power": 1.0})


def test_augmentor_floor_is_read_from_the_rebalanced_training_set():
    import pandas as pd

    from model import data

    rows = [("a", False)] * 3 + [("a", True)] * 2 + [("b", False)] * 7
    table = pd.DataFrame(rows, columns=["label", "augmented"])
    assert data.augmentor_floor(table) == 5  # class a was topped up to 5; b already had more
    assert data.augmentor_floor(table[~table.augmented]) is None


def test_model_card_states_the_floor_the_run_was_rebalanced_with():
    from model import config
    from model.model_card import _weighting_text

    # A run made with `--target-per-class 1000` (F1) must not be described with config's floor.
    assert "floor of 1000 per class" in _weighting_text({"augmentor_floor": 1000})
    assert f"floor of {config.REBALANCE_TARGET_PER_CLASS} per class" in _weighting_text({})


def test_patience_counts_only_from_the_full_size_phase():
    import keras

    from model import network, train

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, config.NUM_CLASSES, 16)
    epochs_run = {}
    for patience_from in (0, 3):
        keras.utils.set_random_seed(0)
        model = network.build_model(input_size=(32, 32), width=4)
        # Learning rate 0: validation never improves after the first epoch, so patience decides.
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        selection = train.ValidationSelection(images, labels, 1, 600, patience_from=patience_from)
        history = model.fit(images, labels, batch_size=8, epochs=6, verbose=0, callbacks=[selection])
        epochs_run[patience_from] = len(history.history["loss"])
    assert epochs_run == {0: 2, 3: 4}
    assert train._small_crop_epochs(train.TrainConfig(small_crop_size=80, small_crop_epochs=36)) == 36
    assert train._small_crop_epochs(train.TrainConfig(small_crop_size=0, small_crop_epochs=36)) == 0  # off


def test_refit_trains_on_train_and_validation_and_keeps_its_chosen_runs_validation(
    synthetic_prepared, tmp_path
):
    import json

    from model import data, evaluate, train
    from model.export import load_served_keras_model
    from model.model_card import render

    chosen, refit = tmp_path / "chosen", tmp_path / "refit"
    tiny = ["--quick", "--width", "4", "--epochs", "1", "--work-dir", str(synthetic_prepared)]
    assert train.main([*tiny, "--out-dir", str(chosen)]) == 0
    # The refit takes the chosen run's whole recipe (the quick one, width 4, one epoch) from its metadata.
    refit_args = ["--work-dir", str(synthetic_prepared), "--refit-of", str(chosen), "--out-dir", str(refit)]
    refit_args.append("--skip-gate")  # the image gate has its own tests (tests/test_gate.py)
    assert train.main(refit_args) == 0

    training = json.loads((refit / config.METADATA_FILE).read_text())["training"]
    chosen_training = json.loads((chosen / config.METADATA_FILE).read_text())["training"]
    val_images = len(data.read_subset("val", synthetic_prepared))
    assert training["width"] == 4 and training["epochs_run"] == 1 and training["refit_of"] == str(chosen)
    assert training["train_images"] == chosen_training["train_images"] + val_images
    assert training["best_val_balanced_accuracy"] is None  # nothing was selected on validation
    assert training["temperature"] == chosen_training["temperature"]
    # The validation figures a refit carries are the chosen run's, scored before the refit.
    chosen_model = load_served_keras_model(chosen)
    _, _, chosen_val, threshold = evaluate.score_subset(chosen_model, "val", synthetic_prepared)
    selection_run = training["selection_run"]
    assert selection_run["run"] == "chosen"
    assert selection_run["val"]["accuracy"] == chosen_val["accuracy"]
    assert selection_run["operating_point"]["malignant_threshold"] == pytest.approx(threshold)

    results = evaluate.evaluate_model(refit, synthetic_prepared)
    assert results["val"] == selection_run["val"]
    assert results["operating_point"] == selection_run["operating_point"]
    assert results["test"]["images"] == len(data.read_subset("test", synthetic_prepared))
    assert not (refit / "evaluation" / "confusion_val.png").exists()  # no plot of training data
    card = render(json.loads((refit / config.METADATA_FILE).read_text()), "")
    assert "A final fit: run chosen's recipe" in card and "| figure | validation (run chosen) |" in card
    assert train.main(["--refit-of", str(tmp_path / "no_such_run"), "--out-dir", str(tmp_path / "x")]) == 2
    # A final fit is no run to refit: its "validation" figures would be scored on its training pictures.
    assert train.main(["--refit-of", str(refit), "--out-dir", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()
    # Comparing runs on validation must not score a refit on its own training images.
    assert (
        evaluate.main(["--model-dir", str(refit), "--work-dir", str(synthetic_prepared), "--validation-only"])
        == 2
    )


def test_a_model_is_not_scored_on_a_split_it_was_not_trained_on(tiny_model_dir, synthetic_prepared, capsys):
    """Another split's validation and test pictures may be this model's training pictures."""
    from model import evaluate, gate

    # The tiny model records split 000...; the synthetic work folder holds another.
    work = ["--model-dir", str(tiny_model_dir), "--work-dir", str(synthetic_prepared)]
    metadata_before = (tiny_model_dir / config.METADATA_FILE).read_bytes()
    assert evaluate.main(work) == 2
    assert "was trained on split 000000000000" in capsys.readouterr().err
    assert evaluate.main([*work, "--validation-only"]) == 2
    assert gate.main(["evaluate", *work]) == 2
    assert (tiny_model_dir / config.METADATA_FILE).read_bytes() == metadata_before  # nothing written


def test_a_wrong_model_dir_gets_one_line_not_a_traceback(
    tiny_model_dir, synthetic_prepared, tmp_path, capsys
):
    from model import evaluate, gate

    work = ["--work-dir", str(synthetic_prepared)]
    for not_a_folder in (tmp_path / "never_trained", tiny_model_dir / config.MODEL_H5_FILE):
        assert evaluate.main(["--model-dir", str(not_a_folder), *work]) == 2
        assert "is not a model folder" in capsys.readouterr().err
    no_gate = tmp_path / "no_gate"
    shutil.copytree(tiny_model_dir, no_gate)
    metadata = json.loads((no_gate / config.METADATA_FILE).read_text())
    del metadata[config.GATE_METADATA_KEY]
    split = json.loads((synthetic_prepared / config.SPLIT_INFO_FILE).read_text())
    metadata["data"]["split_content_hash"] = split["content_hash"]  # only the gate is missing
    (no_gate / config.METADATA_FILE).write_text(json.dumps(metadata))
    assert gate.main(["validate", "--model-dir", str(no_gate), *work]) == 2
    assert "has no image gate" in capsys.readouterr().err


def test_a_rebalanced_set_left_from_another_split_is_refused(synthetic_prepared, tmp_path, capsys):
    from model import data, train

    work = tmp_path / "work"
    shutil.copytree(synthetic_prepared, work)
    manifest = work / config.AUGMENTED_MANIFEST_FILE
    table = pd.read_csv(manifest)
    val_hash = data.read_subset("val", work).pixel_hash.iloc[0]
    table.loc[0, "source_pixel_hash"] = val_hash  # a picture that is validation in this split
    table.to_csv(manifest, index=False)
    with pytest.raises(data.DataMismatch, match="another split"):
        data.read_training_set(work)
    assert train.main(["--quick", "--work-dir", str(work), "--out-dir", str(tmp_path / "m")]) == 2
    assert "data_prep rebalance" in capsys.readouterr().err


def test_refit_rows_carry_the_validation_images_and_their_sources(synthetic_prepared):
    from model import data, train

    table = data.read_training_set(synthetic_prepared)
    val = data.read_subset("val", synthetic_prepared)
    combined = train.with_validation(table, val)
    assert len(combined) == len(table) + len(val)
    assert list(combined.columns) == list(table.columns)
    added = combined.iloc[len(table) :]
    assert set(added.path) == set(val.path) and not added.augmented.any()
    expected = data.image_sources(val, synthetic_prepared).to_numpy()
    np.testing.assert_array_equal(data.image_sources(added, synthetic_prepared).to_numpy(), expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--quick"], config.QUICK_MODEL_DIR), ([], config.MODEL_DIR), (["--quick", "--out-dir", "x"], "x")],
)
def test_a_quick_run_never_writes_over_the_committed_model_by_default(monkeypatch, argv, expected):
    from pathlib import Path
    from types import SimpleNamespace

    from model import train

    result = SimpleNamespace(
        history=[], seconds=0, images_per_second=0, best_epoch=0, best_val_balanced_accuracy=0, temperature=1
    )
    written = []
    monkeypatch.setattr(train, "train", lambda settings, work_dir: result)
    monkeypatch.setattr(train, "save_run", lambda result, settings, out, work_dir: written.append(out) or out)
    assert train.main([*argv, "--skip-gate"]) == 0
    assert written == [Path(expected)]
