"""The committed model on the real official Test split: quality floors and serving equivalence."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from model import config
from model.model_card import TEST_FLOORS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def test_images():
    from tests.conftest import real_data_dir

    root = real_data_dir() / "Test"
    paths = sorted(root.glob("*/*.jpg"))
    assert len(paths) == 118
    return paths


@pytest.fixture(scope="module")
def keras_probabilities(committed_model_dir, test_images):
    from model.evaluate import predict_files
    from model.export import load_keras_model

    return predict_files(load_keras_model(committed_model_dir), test_images)


def test_committed_model_meets_the_floors_on_official_test(keras_probabilities, test_images):
    from model.data import label_indices
    from model.evaluate import headline_metrics

    labels = label_indices([p.parent.name for p in test_images])
    metrics = headline_metrics(keras_probabilities, labels, threshold=0.5)
    for name, floor in TEST_FLOORS.items():
        assert metrics[name] >= floor, f"{name} {metrics[name]:.3f} < {floor}"


def test_litert_export_matches_h5_on_real_test_images(committed_model_dir, keras_probabilities, test_images):
    from model.preprocessing import load_image_file
    from webapp.classifier import Classifier

    classifier = Classifier.from_model_dir(committed_model_dir)
    litert = np.stack([classifier.predict_array(load_image_file(p))[0] for p in test_images])
    np.testing.assert_allclose(litert, keras_probabilities, atol=1e-4, rtol=0)


def test_web_app_matches_h5_on_real_test_images(committed_model_dir, keras_probabilities, test_images):
    from webapp import create_app

    client = create_app({"TESTING": True, "MODEL_DIR": str(committed_model_dir)}).test_client()
    refused = 0
    for path, expected in zip(test_images, keras_probabilities):
        response = client.post("/api/v1/predict", data={"image": (io.BytesIO(path.read_bytes()), path.name)})
        if response.status_code == 422:  # the image gate refused it (its figures: tests/test_gate_real.py)
            assert response.json["error"]["code"] in config.REFUSAL_CODES
            refused += 1
            continue
        served = np.array([response.json["probabilities"][c] for c in config.CLASS_NAMES])
        np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)
    assert refused <= 3  # what the committed gate refuses of Test


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
    assert metadata["training"]["wall_seconds"] <= 30 * 60
    assert metadata["metrics"]["operating_point"]["chosen_on"] == "validation"
