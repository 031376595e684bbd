"""The serving classifier: the LiteRT export of the trained model, rebuilt from its metadata.

No TensorFlow here: ai-edge-litert runs the `.tflite` file, Pillow and NumPy do the rest.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from model import config, integrity
from model.advice import SEE_DOCTOR, Advice, advise, explained_class
from model.preprocessing import to_model_input

# The exit status of a server that refuses to start because its model folder fails the checks
# below (78 is EX_CONFIG in sysexits.h: a configuration error, so restarting will not help).
EXIT_MODEL_INVALID = 78


class ModelLoadError(RuntimeError):
    """The model folder is missing, incomplete, or its files do not prove to be the exported model."""


def open_interpreter(
    model_path: Path, num_threads: int, error: type[ModelLoadError] = ModelLoadError
) -> Interpreter:
    """A LiteRT interpreter of model_path with its tensors allocated; `error` if the file is not one."""
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise error(f"{model_path} is not a valid LiteRT model: {exc}") from exc
    return interpreter


@dataclass
class Prediction:
    """What the model says about one image."""

    probabilities: dict[str, float]
    top_class: str
    melanoma_probability: float
    risk_group: str
    risk_probabilities: dict[str, float]
    malignant_flag: bool
    advice: Advice  # the one answer shown first, by the rule of model.advice
    heatmap_class: str  # the class the heat map explains (model.advice.explained_class)
    class_map: np.ndarray  # (8, 8) activation map of heatmap_class
    inference_ms: float


class Classifier:
    """A LiteRT interpreter plus the metadata that says how to read its outputs."""

    def __init__(self, model_path: Path, metadata: dict, num_threads: int = 1):
        self.metadata = metadata
        self.model_dir = Path(model_path).parent
        try:
            self.class_names: list[str] = list(metadata["class_names"])
            self.input_size = tuple(int(side) for side in metadata["input"]["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"metadata lacks valid class_names or input size: {exc!r}") from exc
        check_hash(Path(model_path), metadata)
        self._interpreter = open_interpreter(model_path, num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {len(d["shape"]): d["index"] for d in self._interpreter.get_output_details()}
        if set(outputs) != {2, 4}:
            raise ModelLoadError(f"{model_path} lacks the probabilities and class-map outputs.")
        self._probabilities, self._class_maps = outputs[2], outputs[4]
        # One interpreter is not safe to call from two threads at once.
        self._lock = threading.Lock()
        self._check_shapes()
        self._check_known_answer()

    @classmethod
    def from_model_dir(cls, model_dir: Path, num_threads: int = 1) -> Classifier:
        """Load metadata.json and the LiteRT file it names; raise ModelLoadError if either is wrong."""
        model_dir = Path(model_dir)
        metadata_path = model_dir / config.METADATA_FILE
        try:
            metadata = json.loads(metadata_path.read_text())
            model_path = model_dir / metadata["files"]["litert"]
        except FileNotFoundError as exc:
            raise ModelLoadError(f"No model metadata at {metadata_path}: {exc.strerror}.") from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{metadata_path} is not valid model metadata: {exc}") from exc
        if not model_path.is_file():
            raise ModelLoadError(f"Model file {model_path} is missing.")
        return cls(model_path, metadata, num_threads)

    def predict(self, image: Image.Image) -> Prediction:
        """Classify one upright RGB image."""
        started = time.perf_counter()
        probabilities, class_maps = self.predict_array(to_model_input(image, self.input_size))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return self._describe(probabilities, class_maps, elapsed_ms)

    def predict_array(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs for one preprocessed (H, W, 3) array: probabilities (9,), class maps (8, 8, 9)."""
        with self._lock:
            self._interpreter.set_tensor(self._input, pixels[np.newaxis].astype(np.float32))
            self._interpreter.invoke()
            probabilities = self._interpreter.get_tensor(self._probabilities)[0].copy()
            class_maps = self._interpreter.get_tensor(self._class_maps)[0].copy()
        return probabilities, class_maps

    def _check_shapes(self) -> None:
        """The metadata's classes and input size must be the ones the LiteRT file was exported with."""
        if sorted(self.class_names) != sorted(config.CLASS_NAMES):
            raise ModelLoadError(
                f"metadata class_names {self.class_names} are not the project's {config.NUM_CLASSES} classes."
            )
        shapes = {d["index"]: tuple(d["shape"]) for d in self._interpreter.get_output_details()}
        for name, index in (("probabilities", self._probabilities), ("class maps", self._class_maps)):
            if shapes[index][-1] != len(self.class_names):
                raise ModelLoadError(
                    f"the model's {name} output has {shapes[index][-1]} classes, "
                    f"metadata names {len(self.class_names)}."
                )
        _, height, width, _ = self._interpreter.get_input_details()[0]["shape"]
        if (int(width), int(height)) != self.input_size:
            raise ModelLoadError(
                f"the model takes {width}x{height} pixels, metadata says "
                f"{self.input_size[0]}x{self.input_size[1]}."
            )

    def _check_known_answer(self) -> None:
        """The reference inputs must give the probabilities recorded at export, class by class."""
        recorded = self.metadata.get("known_answer", {}).get("probabilities")
        if not recorded:
            raise ModelLoadError(_MISSING_INTEGRITY.format(field="known_answer", dir=self.model_dir))
        computed = integrity.known_answer(self.predict_array, self.class_names, self.input_size)
        mismatch = integrity.answer_mismatch(recorded, computed)
        if mismatch:
            raise ModelLoadError(f"known-answer check failed: {mismatch}.")

    def _describe(self, probabilities: np.ndarray, class_maps: np.ndarray, elapsed_ms: float) -> Prediction:
        by_class = {name: float(p) for name, p in zip(self.class_names, probabilities)}
        top = int(np.argmax(probabilities))
        risk = {
            group: float(sum(by_class[c] for c in classes)) for group, classes in config.RISK_GROUPS.items()
        }
        advice = advise(risk, self.metadata, top_class=(self.class_names[top], float(probabilities[top])))
        explained = explained_class(advice, by_class)
        return Prediction(
            probabilities=by_class,
            top_class=self.class_names[top],
            melanoma_probability=by_class[config.MELANOMA],
            risk_group=config.RISK_OF_CLASS[self.class_names[top]],
            risk_probabilities=risk,
            # The flag is the advice's own verdict, so the API and the page cannot disagree (and a
            # model without a validated operating point flags nothing rather than guessing one).
            malignant_flag=advice.level == SEE_DOCTOR,
            advice=advice,
            heatmap_class=explained,
            class_map=class_maps[:, :, self.class_names.index(explained)],
            inference_ms=elapsed_ms,
        )


_MISSING_INTEGRITY = (
    "metadata has no {field}: record it with `python -m model.export --model-dir {dir}` "
    "for the model files you mean to serve."
)


def check_hash(model_path: Path, metadata: dict) -> None:
    """Raise ModelLoadError unless the file's SHA-256 is the one recorded in metadata."""
    recorded = metadata.get("sha256", {}).get(model_path.name)
    if not recorded:
        raise ModelLoadError(_MISSING_INTEGRITY.format(field="sha256", dir=model_path.parent))
    if integrity.file_sha256(model_path) != recorded:
        raise ModelLoadError(f"{model_path} does not match the SHA-256 recorded in its metadata.")
