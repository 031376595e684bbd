"""The image gate at serving time: refuse what the classifier must not answer, and say why.

Every decoded upload is checked here before the classifier: first the image statistics of
`model.quality` (too small, too dark, overexposed, flat, colourless, blurred), then the gate network (LiteRT;
trained by `python -m model.gate train`), which tells a dermoscopic lesion from a picture that is not
a lesion, an ordinary (non-dermoscopic) photo of skin, or a blurred or damaged picture. Thresholds come
from the gate section of the model's metadata, chosen on validation. No TensorFlow here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model import config
from model.preprocessing import to_model_input
from model.quality import CHECKS, MIN_SIDE, image_statistics, quality_problem
from webapp.classifier import ModelLoadError, check_hash, open_interpreter

# Every refusal ends with this: a refusal must never read as an all-clear for the lesion.
NOT_REASSURANCE = (
    "This is not a reassurance about the lesion: see a doctor about any mole or spot that is new, "
    "changing, bleeding or itching."
)
# What the person reads, by reason (a gate class or a model.quality problem) and what to do next.
REASONS: dict[str, str] = {
    config.NOT_A_LESION: "This picture does not look like a close-up of a skin lesion, so it was not "
    "classified. Upload a dermoscopic photo of one mole or spot that fills most of the frame.",
    config.NOT_DERMOSCOPIC: "This looks like an ordinary photo of skin, taken without a dermatoscope. "
    "The model was trained only on dermoscopic images and cannot judge ordinary photos (on them it does "
    "no better than chance), so it was not classified. Take the photo through a dermatoscope (a clip-on "
    "phone attachment works) and try again.",
    config.POOR_QUALITY: "The picture is too blurred or damaged (for example heavily compressed) to "
    "judge, so it was not classified. Upload the original photo, sharp and in good light.",
    "too_small": "The picture is too small ({width}x{height} pixels; the short side needs at least "
    "{min_side}) to show the lesion's structure, so it was not classified. Upload the original photo, "
    "not a thumbnail.",
    "too_dark": "The picture is too dark to judge, so it was not classified. If this is a photo of a skin "
    "lesion, take it again in good light (or with the dermatoscope's light on).",
    "overexposed": "The picture is overexposed (washed out to white), so it was not classified. If this is "
    "a photo of a skin lesion, take it again without flash or direct light shining on the skin.",
    "flat": "The picture is almost one flat colour, with no structure to judge, so it was not "
    "classified. Upload a photo of the skin lesion itself.",
    "colourless": "The picture has almost no colour (black-and-white, or faded by a filter or a scan), and "
    "the model relies on a lesion's colours, so it was not classified. Upload the original colour photo, "
    "without filters.",
    "surround": "The lesion sits in a round field with black around it, as a dermatoscope shows it. "
    "The model was trained on photos that the lesion's skin fills to the edges, and inside such a field it "
    "misses more malignant lesions, so it was not classified. Crop the photo to the inside of the round "
    "field (or zoom in until the field fills the frame) and upload it again.",
    "blurred": "The picture is too blurred to show the lesion's structure, so it was not classified. "
    "Hold the camera still, let it focus, and take it again.",
}


class GateLoadError(ModelLoadError):
    """The model folder has no usable gate (section missing from metadata.json, or file missing)."""


@dataclass
class Refusal:
    """Why an upload is not classified: the API code (config.REFUSAL_CODES), the reason and the message."""

    code: str
    reason: str
    message: str


def refusal(reason: str, **details) -> Refusal:
    """The Refusal for a gate class or a quality problem, its message filled with details."""
    code = reason if reason in config.REFUSAL_CODES else config.POOR_QUALITY
    return Refusal(code, reason, refusal_message(REASONS[reason].format(**details)))


def refusal_message(cause: str) -> str:
    """What a refusal says: its cause and what to do, then that it is no reassurance."""
    return f"{cause} {NOT_REASSURANCE}"


class Gate:
    """The gate network (LiteRT) plus thresholds that turn its output and image statistics into refusals."""

    def __init__(self, model_path: Path, section: dict, num_threads: int = 1):
        self.section = section
        self.classes: list[str] = section["classes"]
        self.input_size = tuple(section["input"]["size"])
        self.lesion_threshold: float = section["thresholds"]["lesion_probability"]
        self.quality_thresholds: dict[str, float] = section["thresholds"]["quality"]
        missing = [problem for problem in CHECKS if problem not in self.quality_thresholds]
        if missing:  # a folder from before a check was added: refuse at start, not with a 500 per upload
            raise GateLoadError(
                f"The gate in metadata.json has no threshold for {', '.join(missing)}: run "
                "`python -m model.gate thresholds` for this model folder."
            )
        self._interpreter = open_interpreter(model_path, num_threads, GateLoadError)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._lock = threading.Lock()  # one interpreter is not safe to call from two threads at once

    @classmethod
    def from_metadata(cls, model_dir: Path, metadata: dict, num_threads: int = 1) -> Gate:
        """The gate that the model folder's metadata describes; GateLoadError if there is none."""
        section = metadata.get(config.GATE_METADATA_KEY)
        if not section:
            raise GateLoadError(
                f"{model_dir} has no image gate (no '{config.GATE_METADATA_KEY}' in metadata.json): "
                "run `python -m model.gate train` for this model folder."
            )
        path = Path(model_dir) / section["files"]["litert"]
        if not path.is_file():
            raise GateLoadError(f"Gate file {path} is missing.")
        check_hash(path, metadata)
        return cls(path, section, num_threads)

    def check(self, image: Image.Image) -> Refusal | None:
        """Why this decoded RGB upload must not be classified, or None when the classifier may answer it."""
        problem = quality_problem(image_statistics(image), self.quality_thresholds)
        if problem:
            width, height = image.size
            min_side = int(self.quality_thresholds.get("min_side", MIN_SIDE))
            return refusal(problem, width=width, height=height, min_side=min_side)
        verdict = self.decide(self.probabilities(image))
        return refusal(verdict) if verdict else None

    def probabilities(self, image: Image.Image) -> np.ndarray:
        """The gate network's class probabilities (in self.classes order) for one RGB image."""
        pixels = to_model_input(image, self.input_size)[np.newaxis]
        with self._lock:
            self._interpreter.set_tensor(self._input, pixels)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output)[0].copy()

    def decide(self, probabilities: np.ndarray) -> str | None:
        """The refusal code for these probabilities: the likeliest other class when P(lesion) is too low."""
        lesion = self.classes.index(config.GATE_LESION)
        if probabilities[lesion] >= self.lesion_threshold:
            return None
        others = [i for i in range(len(self.classes)) if i != lesion]
        return self.classes[max(others, key=lambda i: probabilities[i])]
