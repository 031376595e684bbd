"""Shared fixtures: a synthetic dataset with planted defects, a tiny model, the app and its client."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model import config  # noqa: E402

PER_CLASS = {"Train": 8, "Test": 3}


# --- Real data (integration tests) ------------------------------------------------------------------
def real_data_dir() -> Path:
    """The real dataset folder (ISIC_DATA_DIR), or skip the test when it is absent."""
    if not (config.DATA_DIR / "Train").is_dir():
        pytest.skip(f"real ISIC data not found at {config.DATA_DIR} (set ISIC_DATA_DIR)")
    return config.DATA_DIR


@pytest.fixture(scope="session")
def real_prepared(tmp_path_factory) -> Path:
    """The real dataset run through every data_prep stage into a temporary work folder."""
    from data_prep.__main__ import main

    data_dir = real_data_dir()
    work = tmp_path_factory.mktemp("real_work")
    args = [
        "--data-dir",
        str(data_dir),
        "--ham-metadata",
        str(config.HAM_METADATA_PATH),
        "--ham-dir",
        str(config.HAM_IMAGES_DIR),
        "--work-dir",
        str(work),
    ]
    for stage in ("ingest", "audit", "split", "rebalance"):
        assert main([stage, *args]) == 0
    return work


@pytest.fixture(scope="session")
def committed_model_dir() -> Path:
    """The committed, trained model folder."""
    if not (config.MODEL_DIR / config.MODEL_H5_FILE).is_file():
        pytest.fail(f"no committed model at {config.MODEL_DIR}")
    return config.MODEL_DIR


# --- Synthetic dataset --------------------------------------------------------------------------
def _lesion_image(rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A random blob on a skin-coloured background: distinct pixels for every call."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = rng.uniform(size * 0.3, size * 0.7, 2)
    radius = rng.uniform(size * 0.15, size * 0.35)
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    skin = rng.uniform(170, 230, 3)
    lesion = rng.uniform(40, 140, 3)
    pixels = np.where(inside[..., None], lesion, skin) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> dict:
    """A tiny 9-class dataset with one of each defect planted, and HAM-style metadata.

    Planted: an exact duplicate inside a class folder; a Train picture in two class folders
    (melanoma + seborrheic keratosis, no HAM record); a HAM picture in two folders that HAM settles
    (actinic keratosis + nevus, dx akiec); a Test picture that also sits in Train under another
    label; a HAM lesion with pictures in Train and Test; a corrupt JPEG and a text file.
    """
    root = tmp_path_factory.mktemp("synthetic") / "isic9"
    rng = np.random.default_rng(0)
    ham_rows, counter = [], iter(range(100000, 200000))
    files: dict[str, list[Path]] = {}
    for split, count in PER_CLASS.items():
        for label in config.CLASS_NAMES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for _ in range(count):
                path = folder / f"ISIC_{next(counter):07d}.jpg"
                _lesion_image(rng).save(path, quality=95)
                files.setdefault(f"{split}/{label}", []).append(path)

    def copy(src: Path, split: str, label: str, name: str | None = None) -> Path:
        dst = root / split / label / (name or src.name)
        shutil.copyfile(src, dst)
        return dst

    nevus = files["Train/nevus"]
    planted = {
        "duplicate": copy(nevus[0], "Train", "nevus", nevus[0].stem + "(1).jpg"),
        "mel_sk_conflict": copy(files["Train/melanoma"][0], "Train", "seborrheic keratosis"),
        "ak_nevus_conflict": copy(files["Train/actinic keratosis"][0], "Train", "nevus"),
        "test_in_train": copy(files["Test/basal cell carcinoma"][0], "Train", "dermatofibroma"),
    }
    (root / "Train" / "nevus" / "ISIC_9999999.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "Train" / "nevus" / "notes.txt").write_text("not an image")
    ak_id = files["Train/actinic keratosis"][0].stem
    ham_rows.append({"lesion_id": "HAM_1", "image_id": ak_id, "dx": "akiec"})
    # One lesion photographed twice: once in Train, once in Test.
    ham_rows.append({"lesion_id": "HAM_2", "image_id": files["Train/vascular lesion"][1].stem, "dx": "vasc"})
    ham_rows.append({"lesion_id": "HAM_2", "image_id": files["Test/vascular lesion"][1].stem, "dx": "vasc"})
    # A nevus-folder picture that HAM calls bcc: contradicted, and not settleable within its folders.
    ham_rows.append({"lesion_id": "HAM_3", "image_id": nevus[3].stem, "dx": "bcc"})
    ham_dir, ham_only = _synthetic_ham(root.parent / "ham10000", rng, files, ham_rows)
    ham_path = root.parent / "HAM10000_metadata.csv"
    pd.DataFrame(ham_rows).assign(dx_type="histo", age=50, sex="male", localization="back").to_csv(
        ham_path, index=False
    )
    return {
        "root": root,
        "ham": ham_path,
        "ham_dir": ham_dir,
        "ham_only": ham_only,
        "files": files,
        "planted": planted,
    }


# HAM10000-only lesions of the synthetic second source: dx -> images per lesion, one list entry a lesion.
SYNTHETIC_HAM_LESIONS = {"nv": [3, 1], "mel": [1, 1], "bkl": [1, 1], "bcc": [1, 1], "df": [1], "vasc": [1]}


def _synthetic_ham(ham_dir: Path, rng, files: dict, ham_rows: list[dict]) -> tuple[Path, dict]:
    """A HAM10000-style folder: two pictures isic9 also holds (at another size), lesions only it holds
    (one nevus photographed three times), and one akiec picture that no single class fits."""
    ham_dir.mkdir(parents=True)
    for shared in (files["Train/actinic keratosis"][0], files["Train/vascular lesion"][1]):
        Image.open(shared).resize((50, 38)).save(ham_dir / shared.name, quality=95)
    ham_only: dict[str, list[str]] = {}
    counter = iter(range(300000, 400000))
    lesions = [(dx, n) for dx, sizes in SYNTHETIC_HAM_LESIONS.items() for n in sizes] + [("akiec", 1)]
    for index, (dx, images) in enumerate(lesions):
        for _ in range(images):
            image_id = f"ISIC_{next(counter):07d}"
            _lesion_image(rng, 50).save(ham_dir / f"{image_id}.jpg", quality=95)
            ham_rows.append({"lesion_id": f"HAM_L{index}", "image_id": image_id, "dx": dx})
            ham_only.setdefault(f"HAM_L{index}", []).append(image_id)
    return ham_dir, ham_only


@pytest.fixture(scope="session")
def synthetic_prepared(synthetic_dataset, tmp_path_factory) -> Path:
    """The synthetic dataset run through ingest, audit, split and rebalance (target 12 per class)."""
    from data_prep.__main__ import main

    work = tmp_path_factory.mktemp("synthetic_work")
    args = [
        "--data-dir",
        str(synthetic_dataset["root"]),
        "--ham-metadata",
        str(synthetic_dataset["ham"]),
        "--ham-dir",
        str(synthetic_dataset["ham_dir"]),
        "--work-dir",
        str(work),
        "--target-per-class",
        "12",
        "--val-fraction",
        "0.25",
        "--ham-test-fraction",
        "0.34",
    ]
    assert main(["all", *args]) == 0
    return work


# --- A tiny model, built and exported by the project's own code --------------------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained width-4 model saved exactly as training saves one (h5, tflite, metadata)."""
    import keras

    from model import export, network

    keras.utils.set_random_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny_model")
    model = network.build_model(width=4, temperature=1.5)
    model.save(model_dir / config.MODEL_H5_FILE)
    export.export_litert(model, model_dir / config.MODEL_TFLITE_FILE)
    metadata = export.build_metadata(training={"train_images": 0}, data={"split_content_hash": "0" * 64})
    metadata["metrics"] = {"operating_point": {"malignant_threshold": 0.3}}
    metadata[config.GATE_METADATA_KEY] = _tiny_gate(model_dir)
    export.write_metadata(metadata, model_dir)
    return model_dir


# Thresholds that let every picture through (the fixture's lesions are 40-pixel blobs); gate tests
# set their own.
OPEN_GATE_QUALITY = {
    "min_side": 1,
    "too_dark": -1.0,
    "overexposed": 2.0,
    "flat": -1.0,
    "colourless": -1.0,
    "blurred": -1.0,
}


def _tiny_gate(model_dir: Path) -> dict:
    """An untrained width-4 gate exported as `model.gate train` exports one, with an open threshold."""
    from model import gate
    from model.export import write_litert

    write_litert(gate.build_gate_model(width=4), model_dir / config.GATE_TFLITE_FILE)
    return gate.gate_section(0.0, dict(OPEN_GATE_QUALITY), training={"images": 0})


@pytest.fixture()
def app(tiny_model_dir):
    """The web app serving the tiny fixture model."""
    from webapp import create_app

    return create_app({"TESTING": True, "MODEL_DIR": str(tiny_model_dir)})


@pytest.fixture()
def client(app):
    """Flask's test client for the app."""
    return app.test_client()


@pytest.fixture(scope="session")
def sample_jpeg(synthetic_dataset) -> Path:
    """One synthetic lesion JPEG."""
    return synthetic_dataset["files"]["Test/melanoma"][0]
