"""Export: the LiteRT (.tflite) model that the web app serves, and the metadata saved beside it.

`python -m model.export --model-dir DIR` rewrites the integrity fields of DIR/metadata.json (the
LiteRT file's SHA-256 and its known answer) for the files now in DIR, e.g. after a re-export.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model import config, integrity, network


def export_litert(model: keras.Model, path: Path) -> Path:
    """Convert the model (with its class-activation-map output) to a float32 LiteRT flatbuffer."""
    return write_litert(network.serving_model(model), path)


def write_litert(model: keras.Model, path: Path) -> Path:
    """Write a Keras model as a float32 LiteRT flatbuffer (the classifier's and the image gate's)."""
    # No quantisation: the export must reproduce the Keras probabilities within 1e-4.
    path = Path(path)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def build_metadata(training: dict, data: dict) -> dict:
    """The metadata JSON saved beside the model; serving rebuilds its predictor from it."""
    return {
        "name": config.MODEL_NAME,
        "version": config.MODEL_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "class_names": list(config.CLASS_NAMES),
        "risk_groups": {k: list(v) for k, v in config.RISK_GROUPS.items()},
        "input": {
            "size": list(config.IMAGE_SIZE),
            "channels": "RGB",
            "range": [0, 255],
            "preprocessing": "model.preprocessing.decode_image + to_model_input: EXIF-upright RGB, "
            "whole frame resized (bilinear) to the input size; shades-of-grey colour constancy "
            f"(p={config.SHADES_OF_GREY_P:g}) and rescaling are layers inside the model",
        },
        "outputs": {
            "probabilities": [config.NUM_CLASSES],
            "class_maps": [*(s // network.FEATURE_STRIDE for s in config.IMAGE_SIZE), config.NUM_CLASSES],
        },
        "files": {"keras": config.MODEL_H5_FILE, "litert": config.MODEL_TFLITE_FILE},
        "orientation": "served outputs are the mean of the logits over the 8 flips and rotations by 90 "
        "degrees of the input (model.network.orientation_averaged); model.h5 holds the single-view network",
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "training": training,
        "data": data,
        "metrics": {},
    }


def write_metadata(metadata: dict, model_dir: Path) -> Path:
    """Write metadata.json into model_dir, with the integrity fields of the LiteRT file already there."""
    model_dir = Path(model_dir)
    metadata = {**metadata, **integrity_fields(metadata, model_dir)}
    path = model_dir / config.METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False, default=_jsonable))
    return path


def integrity_fields(metadata: dict, model_dir: Path) -> dict:
    """The SHA-256s (classifier and gate) and the classifier's known answer, for the server to check."""
    fields = integrity.record(
        Path(model_dir) / metadata["files"]["litert"],
        metadata["class_names"],
        tuple(metadata["input"]["size"]),
    )
    section = metadata.get(config.GATE_METADATA_KEY)
    gate = Path(model_dir) / section["files"]["litert"] if section else None
    if gate is not None and gate.is_file():
        fields["sha256"][gate.name] = integrity.file_sha256(gate)
    return fields


def refresh_integrity(model_dir: Path) -> Path:
    """Rewrite only the integrity fields of an existing model folder's metadata.json."""
    path = Path(model_dir) / config.METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata.update(integrity_fields(metadata, model_dir))
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False, default=_jsonable))
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: refresh the integrity fields of a model folder's metadata.json."""
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=config.MODEL_DIR)
    args = parser.parse_args(argv)
    try:
        path = refresh_integrity(args.model_dir)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"integrity fields of {path} rewritten")
    return 0


def load_keras_model(model_dir: Path = config.MODEL_DIR) -> keras.Model:
    """Load the trained single-view `.h5` model (model.network registers its custom layers)."""
    return keras.models.load_model(Path(model_dir) / config.MODEL_H5_FILE, compile=False)


def load_served_keras_model(model_dir: Path = config.MODEL_DIR) -> keras.Model:
    """The `.h5` model as it is served: probabilities averaged over the 8 orientations."""
    return network.orientation_averaged(load_keras_model(model_dir))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
