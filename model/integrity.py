"""A served model proves itself: the hash of its LiteRT file and a known answer, recorded at export.

`record(model_dir)` runs the LiteRT file on a few fixed reference inputs and returns the fields that
export writes into metadata.json; the server recomputes them at start-up (webapp.classifier) and
refuses to start when they differ. The answer is keyed by class name, so a class list saved in the
wrong order, renamed or cut short fails it. NumPy and LiteRT only: the serving image runs it too.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np

# LiteRT against LiteRT on the same file: only the float summation order of the CPU kernels can
# differ between machines (relative error about 1e-6). The check is relative (ATOL only guards
# against exact zeros), because most classes get probabilities far below 1e-3 on any one picture
# (1e-13 here and there), and a swap of two such classes must fail too.
KNOWN_ANSWER_RTOL = 1e-3
KNOWN_ANSWER_ATOL = 1e-30
REFERENCE_INPUT_COUNT = 4


def reference_inputs(size: tuple[int, int], count: int = REFERENCE_INPUT_COUNT) -> np.ndarray:
    """Fixed (count, height, width, 3) float32 pictures in 0..255, from arithmetic alone (no RNG).

    A textured dark blob on skin-coloured ground, of a different size, shape and colour in each,
    so that every class gets a distinct probability from at least one of them.
    """
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    pictures = []
    for k in range(count):
        centre_y, centre_x = height * (0.4 + 0.05 * (k % 3)), width * (0.45 + 0.04 * k)
        distance = np.hypot((yy - centre_y) / (1 + 0.1 * k), (xx - centre_x) / (1 + 0.05 * (k % 3)))
        inside = np.clip((width * (0.12 + 0.04 * k) - distance) / 6, 0, 1)[..., np.newaxis]
        skin = np.array([225 - 5 * k, 180 - 6 * k, 160 - 8 * k])
        texture = 25 * np.sin(xx * 0.075 * (k + 1) + yy * 0.2)[..., np.newaxis]
        lesion = np.array([120 - 10 * k, 70 + 8 * (k % 3), 50 + 12 * (k % 2)]) + texture
        pictures.append(skin * (1 - inside) + lesion * inside)
    return np.clip(np.round(np.stack(pictures)), 0, 255).astype(np.float32)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def known_answer(predict, class_names: list[str], size: tuple[int, int]) -> list[dict[str, float]]:
    """The probabilities of each reference input, keyed by class name; predict(x) -> (probs, maps)."""
    answers = []
    for picture in reference_inputs(size):
        probabilities = np.asarray(predict(picture)[0], dtype=np.float64)
        answers.append({name: float(p) for name, p in zip(class_names, probabilities)})
    return answers


def _close(a: float, b: float, slack: float = 1.0) -> bool:
    return abs(a - b) <= slack * (KNOWN_ANSWER_ATOL + KNOWN_ANSWER_RTOL * max(abs(a), abs(b)))


def answer_mismatch(recorded: list[dict[str, float]], computed: list[dict[str, float]]) -> str | None:
    """Why two known answers differ (beyond the tolerances above), or None when they agree."""
    if len(recorded) != len(computed):
        return f"{len(recorded)} reference answers recorded, {len(computed)} computed"
    for index, (want, got) in enumerate(zip(recorded, computed)):
        if set(want) != set(got):
            return f"classes {sorted(set(want) ^ set(got))} are not in both answers"
        for name in want:
            if not _close(want[name], got[name]):
                return f"reference input {index}: P({name}) is {got[name]:.6g}, recorded {want[name]:.6g}"
    return None


def indistinct_classes(answers: list[dict[str, float]]) -> list[tuple[str, str]]:
    """Pairs of classes that no reference input tells apart: a swap of those could pass unseen."""
    names = list(answers[0]) if answers else []
    return [
        (a, b)
        for a, b in itertools.combinations(names, 2)
        if all(_close(answer[a], answer[b], slack=10) for answer in answers)
    ]


def litert_predict(model_path: Path):
    """A predict(picture) -> (probabilities, class maps) function over a fresh LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    outputs = sorted(interpreter.get_output_details(), key=lambda d: len(d["shape"]))

    def predict(picture: np.ndarray):
        interpreter.set_tensor(index, picture[np.newaxis].astype(np.float32))
        interpreter.invoke()
        return tuple(interpreter.get_tensor(d["index"])[0].copy() for d in outputs)

    return predict


def record(model_path: Path, class_names: list[str], size: tuple[int, int]) -> dict:
    """The integrity fields of metadata.json for a LiteRT file: its SHA-256 and its known answer.

    known_answer.indistinct lists the class pairs that no reference input tells apart (a swap of
    those would pass unseen): empty for a trained model, all pairs for an untrained one.
    """
    answers = known_answer(litert_predict(model_path), class_names, size)
    return {
        "sha256": {Path(model_path).name: file_sha256(model_path)},
        "known_answer": {
            "inputs": f"model.integrity.reference_inputs({list(size)}, {REFERENCE_INPUT_COUNT})",
            "rtol": KNOWN_ANSWER_RTOL,
            "atol": KNOWN_ANSWER_ATOL,
            "probabilities": answers,
            "indistinct": [list(pair) for pair in indistinct_classes(answers)],
        },
    }
