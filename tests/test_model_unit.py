"""Model builder, colour constancy, input pipeline, calibration, metrics and export on tiny inputs."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

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


def test_class_maps_average_to_the_logits(tiny_model):
    from model.network import logits_model, serving_model

    x = np.random.default_rng(2).uniform(0, 255, (2, *config.IMAGE_SIZE, 3)).astype("float32")
    probabilities, maps = serving_model(tiny_model).predict(x, verbose=0)
    logits = logits_model(tiny_model).predict(x, verbose=0)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), logits, atol=1e-4)
    np.testing.assert_allclose(probabilities, tiny_model.predict(x, verbose=0), atol=1e-6)


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


def test_class_weights_balance_the_loss():
    from model.data import sample_weights

    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    weights = sample_weights(labels)
    totals = [weights[labels == c].sum() for c in range(3)]
    assert totals == pytest.approx([20, 20, 20])
    assert weights.mean() == pytest.approx(1.0)


def test_source_weights_stop_the_source_predicting_the_class():
    from model.data import sample_weights

    # Source "early" holds 10 of class 0 and 30 of class 1; source "late" holds 60 of class 0.
    labels = np.array([0] * 10 + [1] * 30 + [0] * 60)
    sources = pd.Series(["early"] * 40 + ["late"] * 60)
    weights = sample_weights(labels, sources)
    early = sources.to_numpy() == "early"
    # Within "early", both classes now weigh the same: the source says nothing about the class.
    assert weights[early & (labels == 0)].sum() == pytest.approx(weights[early & (labels == 1)].sum())
    assert weights.mean() == pytest.approx(1.0)


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


def test_litert_export_matches_keras(tiny_model_dir, synthetic_dataset):
    from ai_edge_litert.interpreter import Interpreter

    from model.export import load_keras_model
    from model.preprocessing import load_image_file

    files = synthetic_dataset["files"]["Test/nevus"]
    images = np.stack([load_image_file(p) for p in files])
    expected = load_keras_model(tiny_model_dir).predict(images, verbose=0)
    interpreter = Interpreter(model_path=str(tiny_model_dir / config.MODEL_TFLITE_FILE))
    interpreter.allocate_tensors()
    outputs = {len(d["shape"]): d["index"] for d in interpreter.get_output_details()}
    for image, want in zip(images, expected):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(outputs[2])[0], want, atol=1e-5)
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


def test_mixstyle_restyles_in_training_and_is_the_identity_otherwise():
    from model.network import MixStyle

    rng = np.random.default_rng(4)
    # Eight "images" with very different channel statistics (styles).
    x = rng.normal(size=(8, 6, 6, 4)) * rng.uniform(0.5, 3, (8, 1, 1, 4)) + rng.uniform(-5, 5, (8, 1, 1, 4))
    x = x.astype("float32")
    layer = MixStyle(probability=1.0, alpha=0.1, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(MixStyle(probability=0.0)(x, training=True)), x)

    mixed = np.asarray(layer(x, training=True))

    def standardise(a):
        return (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)

    # The content (the standardised map) is kept; the style (channel mean) moves towards another image's.
    np.testing.assert_allclose(standardise(mixed), standardise(x), atol=1e-3)
    assert np.abs(mixed.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max() > 0.1


def test_model_with_mixstyle_saves_and_reloads_as_h5(tmp_path):
    import keras

    from model.network import build_model, with_temperature

    flexible = build_model(input_size=(None, None), width=4, mixstyle=0.5)
    assert sum(type(layer).__name__ == "MixStyle" for layer in flexible.layers) == 2
    model = with_temperature(flexible, 1.0)
    model.save(tmp_path / "model.h5")
    reloaded = keras.models.load_model(tmp_path / "model.h5", compile=False)
    x = np.random.default_rng(5).uniform(0, 255, (2, *config.IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), flexible.predict(x, verbose=0), atol=1e-6)


def test_random_vignette_darkens_the_corners_and_keeps_the_centre():
    import tensorflow as tf

    from model.data import VIGNETTE_OUTSIDE, random_vignette

    images = np.full((16, 32, 32, 3), 200.0, dtype=np.float32)
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(np.asarray(random_vignette(images, seed, 0.0)), images)
    framed = np.asarray(random_vignette(images, seed, 1.0))
    np.testing.assert_array_equal(framed[:, 15:17, 15:17], images[:, 15:17, 15:17])
    corners = framed[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() <= 200.0 * VIGNETTE_OUTSIDE[1] + 1e-3
    np.testing.assert_array_equal(framed, np.asarray(random_vignette(images, seed, 1.0)))  # seeded
    half = np.asarray(random_vignette(images, seed, 0.5))
    assert 0 < (half[:, 0, 0, 0] < 200).sum() < 16  # only a share of the batch gets one


def test_model_card_lists_the_measures_the_run_used():
    from model.model_card import confounding_text

    plain = confounding_text({"crop_size": 0, "weighting": "class"})
    assert "crops" not in plain and "vignette" not in plain and "MixStyle" not in plain
    full = confounding_text(
        {
            "crop_size": 112,
            "weighting": "source",
            "vignette": 0.3,
            "mixstyle": 0.5,
            "resolution": 0.5,
            "frame_swap": 0.5,
            "cutmix": 0.5,
        }
    )
    assert "112-pixel crops" in full and "(source, class)" in full
    assert "vignette on 30%" in full and "MixStyle" in full and "resolution jitter: 50%" in full
    assert "frame swaps: 50%" in full and "frame swaps" not in plain
    assert "CutMix (Yun et al. 2019) on 50%" in full and "CutMix" not in plain


def test_random_frame_swap_replaces_the_border_and_keeps_the_centre():
    import tensorflow as tf

    from model.data import FRAME_SEAM, FRAME_WIDTH, random_frame_swap

    # Every image a different flat grey, so a swapped border shows as another image's value.
    images = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None, None] * 10, (16, 64, 64, 3))
    seed = tf.constant([7, 8], tf.int64)
    np.testing.assert_array_equal(np.asarray(random_frame_swap(images, seed, 0.0)), images)
    swapped = np.asarray(random_frame_swap(images, seed, 1.0))
    edge = int(np.ceil(64 * (FRAME_WIDTH[1] + FRAME_SEAM))) + 1  # the widest border and its seam
    centre = slice(edge, 64 - edge)
    np.testing.assert_array_equal(swapped[:, centre, centre], images[:, centre, centre])
    corners = swapped[:, 0, 0, 0]
    # The corners now hold values of the batch's images, and (a permutation) not all their own.
    assert set(corners) <= set(images[:, 0, 0, 0]) and (corners != images[:, 0, 0, 0]).any()
    np.testing.assert_array_equal(swapped, np.asarray(random_frame_swap(images, seed, 1.0)))  # seeded
    half = np.asarray(random_frame_swap(images, seed, 0.5))
    untouched = [np.array_equal(a, b) for a, b in zip(half, images)]
    assert 0 < sum(untouched) < 16


def test_random_cutmix_pastes_a_box_and_mixes_targets_and_weights_by_its_area():
    import tensorflow as tf

    from model.data import random_cutmix

    # Image i is a flat grey of value i, so each pixel names the image it came from.
    images = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None, None], (16, 32, 32, 3))
    targets = np.eye(config.NUM_CLASSES, dtype=np.float32)[np.arange(16) % config.NUM_CLASSES]
    weights = np.linspace(0.5, 2.0, 16).astype(np.float32)
    seed = tf.constant([3, 4], tf.int64)
    unchanged = random_cutmix(images, targets, weights, seed, 0.0)
    for before, after in zip((images, targets, weights), unchanged):
        np.testing.assert_array_equal(np.asarray(after), before)
    mixed_images, mixed_targets, mixed_weights = map(
        np.asarray, random_cutmix(images, targets, weights, seed, 1.0)
    )
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-6)
    assert (mixed_images != images).any(axis=(1, 2, 3)).sum() > 8  # most images got a box
    for i in range(16):
        foreign = mixed_images[i, ..., 0] != i
        share = foreign.mean()
        if share == 0:
            np.testing.assert_array_equal(mixed_targets[i], targets[i])
            continue
        partner = int(mixed_images[i, ..., 0][foreign][0])
        assert np.all(mixed_images[i, ..., 0][foreign] == partner)  # one rectangular box, one partner
        rows, cols = np.nonzero(foreign)
        assert foreign[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        np.testing.assert_allclose(
            mixed_targets[i], (1 - share) * targets[i] + share * targets[partner], atol=1e-6
        )
        np.testing.assert_allclose(
            mixed_weights[i], (1 - share) * weights[i] + share * weights[partner], rtol=1e-5
        )


def test_cutmix_pipeline_yields_one_hot_targets_and_trains(synthetic_prepared):
    from model import data, network, train

    settings = train.TrainConfig(crop_size=64, cutmix=1.0, batch_size=8)
    table = data.read_training_set(synthetic_prepared)
    labels = data.label_indices(table.label)
    weights = data.sample_weights(labels)
    images, targets, batch_weights = next(iter(train.training_dataset(table.path, labels, settings, weights)))
    assert targets.shape == (8, config.NUM_CLASSES) and batch_weights.shape == (8,)
    np.testing.assert_allclose(np.asarray(targets).sum(axis=1), 1.0, rtol=1e-6)
    model = network.build_model(input_size=(None, None), width=4)
    model.compile(optimizer="adam", loss=train._loss(settings), metrics=["accuracy"])
    history = model.fit(train.training_dataset(table.path, labels, settings, weights), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and 0 <= history.history["accuracy"][0] <= 1


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
    centre = frame_probe(Reader(row=20), images, labels, sources)
    assert centre["archive_borders"] == centre["control_borders"] == centre["own"]
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
    assert _frame_probe_text(None) == ""


def test_random_resolution_blurs_a_share_of_the_batch_and_keeps_its_shape():
    import tensorflow as tf

    from model.data import random_resolution

    # A checkerboard: the finest texture there is, which resampling through fewer pixels must soften.
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255.0).astype(np.float32)
    images = np.repeat(np.repeat(board[None, :, :, None], 3, axis=3), 16, axis=0)
    seed = tf.constant([5, 6], tf.int64)
    np.testing.assert_array_equal(np.asarray(random_resolution(images, seed, 0.0)), images)
    everything = np.asarray(random_resolution(images, seed, 1.0))
    assert everything.shape == images.shape
    assert everything.std(axis=(1, 2, 3)).max() < images.std() * 0.9  # every image lost contrast
    half = np.asarray(random_resolution(images, seed, 0.5))
    untouched = [np.array_equal(a, b) for a, b in zip(half, images)]
    assert 0 < sum(untouched) < 16
    np.testing.assert_array_equal(half, np.asarray(random_resolution(images, seed, 0.5)))  # seeded


def test_label_smoothing_loss_matches_keras_on_one_hot_labels():
    import keras

    from model.train import SmoothedSparseCrossentropy

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 6)
    probabilities = rng.dirichlet(np.ones(5), 6).astype("float32")
    weights = rng.uniform(0.5, 2.0, 6).astype("float32")
    for smoothing in (0.0, 0.1):
        ours = SmoothedSparseCrossentropy(smoothing)(labels, probabilities, sample_weight=weights)
        keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        reference = keras_loss(np.eye(5)[labels], probabilities, sample_weight=weights)
        assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    # Smoothing penalises a confident right answer: the loss of a one-hot prediction is no longer 0.
    confident = np.eye(5, dtype="float32")[labels]
    assert float(SmoothedSparseCrossentropy(0.1)(labels, np.clip(confident, 1e-3, 1))) > 0.1


def test_ema_run_selects_and_keeps_the_averaged_weights():
    import keras

    from model import network, train

    class RawWeights(keras.callbacks.Callback):
        """Records the weights of the last step at each epoch end, before any swap."""

        def on_train_begin(self, logs=None):
            self.by_epoch = {}

        def on_epoch_end(self, epoch, logs=None):
            self.by_epoch[epoch] = self.model.get_weights()

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, config.NUM_CLASSES, 16)
    for ema in (0.0, 0.9):
        settings = train.TrainConfig(ema=ema, epochs=2, warmup_epochs=1, batch_size=8)
        keras.utils.set_random_seed(0)
        model = network.build_model(input_size=(32, 32), width=4)
        model.compile(
            optimizer=train._optimizer(settings, len(images)), loss="sparse_categorical_crossentropy"
        )
        raw = RawWeights()
        selection = train.ValidationSelection(images, labels, patience=5, max_seconds=600)
        model.fit(
            images,
            labels,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[raw, *train.fit_callbacks(settings, selection)],
        )
        kept = selection.best_weights
        differs = any(not np.array_equal(a, b) for a, b in zip(kept, raw.by_epoch[selection.best_epoch]))
        assert differs == bool(ema)  # averaged weights were scored and kept only with EMA
        for final, best in zip(model.get_weights(), kept):
            np.testing.assert_array_equal(final, best)  # the model ends on the kept weights


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
    from model.export import load_keras_model
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
    _, _, chosen_val, threshold = evaluate.score_subset(load_keras_model(chosen), "val", synthetic_prepared)
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
    assert "A final fit: run chosen's recipe" in card and "| metric | validation (run chosen) |" in card
    assert train.main(["--refit-of", str(tmp_path / "no_such_run"), "--out-dir", str(tmp_path / "x")]) == 2
    # Comparing runs on validation must not score a refit on its own training images.
    assert (
        evaluate.main(["--model-dir", str(refit), "--work-dir", str(synthetic_prepared), "--validation-only"])
        == 2
    )


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


def _tta_probe():
    path = config.PROJECT_ROOT / "scripts" / "tta_probe.py"
    spec = importlib.util.spec_from_file_location("tta_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tta_probe_views_are_the_eight_symmetries_and_the_five_training_crops():
    probe = _tta_probe()
    image = np.arange(4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    views = probe.dihedral_views(image)
    assert len({view.tobytes() for view in views}) == 8
    assert any(np.array_equal(view, image) for view in views)
    assert any(np.array_equal(view, image[:, :, ::-1]) for view in views)  # a mirror image is one of them
    crops = probe.five_crops(np.zeros((2, 160, 160, 3)), size=140)
    assert [crop.shape for crop in crops] == [(2, 140, 140, 3)] * 5
    assert len({(crop[0, 0, 0, 0], crop[0, -1, -1, 0]) for crop in probe.five_crops(image, size=2)}) == 5


def test_tta_probe_scores_the_plain_view_like_the_evaluation(tiny_model_dir, synthetic_prepared):
    from model import data, evaluate
    from model.export import load_keras_model
    from model.preprocessing import load_image_files

    probe = _tta_probe()
    table = data.read_subset("val", synthetic_prepared)
    labels = data.label_indices(table.label)
    images = load_image_files(table.path)
    result = probe.probe(tiny_model_dir, images, labels)

    probabilities = load_keras_model(tiny_model_dir).predict(images, verbose=0)
    plain = evaluate.headline_metrics(probabilities, labels, evaluate.choose_threshold(probabilities, labels))
    assert result["plain"]["accuracy"] == plain["accuracy"]
    assert set(result) == {"plain", "d8", "d8x5"}
    d8x5 = result["d8x5"]
    assert d8x5["margin"] == pytest.approx(min(d8x5[name] - floor for name, floor in probe.FLOORS.items()))
