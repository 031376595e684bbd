"""Cheap image statistics that say a picture is unusable: too small, too dark, overexposed, flat, colourless,
blurred, or framed by a dermatoscope's black surround.

A photo taken through a dermatoscope (a clip-on phone attachment, some ISIC Archive pictures) can
show the lesion inside a round field with black around it. The statistics describe that field, so
that the black does not make the picture "too dark" (run G18 in docs/EXPERIMENTS.md), and the
surround is a problem of its own: the classifier misjudges such pictures (run CF).

Pillow and NumPy only (the serving image has no TensorFlow). The statistics are measured on the
decoded upload; `model.gate` fits the thresholds on clean validation images (so that almost none of
them is flagged) and stores them in the gate's metadata, which serving reads. Pictures decoded from
data that is mostly missing are caught earlier, by the decoder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageStat

from model.preprocessing import LUMA_WEIGHTS

# Statistics are taken on the frame (or its field of view) squashed to this size, like the models'
# inputs: a fixed scale makes the sharpness of a 180-pixel dermoscopy image and a 12-megapixel photo
# comparable.
STATS_SIZE = (128, 128)
# Below this many pixels on the short side a lesion has no visible structure to judge (the dataset's
# images have 150 or more); a fixed floor, not fitted.
MIN_SIDE = 64
# A pixel at or above this grey level is blown out.
SATURATED_LEVEL = 250
# Below this grey level, pixels reaching in from the frame's edges are the black around a field of view.
FRAME_LEVEL = 32
# Black runs from the edges that fill all four corners and at least this share of the frame are a
# dermatoscope's surround; less (a dark lesion or hair at one edge, a dark background) is none. The
# classifier misjudges lesions inside a surround (run CF), so such photos are refused, asking for the
# inside of the field.
MIN_SURROUND_SHARE = 0.1
# A field of view (without its rim) under this share of the frame is no field at all: a dark photo is
# dark everywhere, and text on a dark page has only thin bright strokes.
MIN_FIELD_SHARE = 0.15
# The lens's soft rim, in pixels of STATS_SIZE, left out of the statistics: its edge is no lesion's
# sharpness or contrast.
RIM_PIXELS = 4

# The problems in the order they are checked, each with the statistic that reveals it and whether a
# low or a high value is bad. "too_small" compares the short side with MIN_SIDE.
CHECKS: dict[str, tuple[str, str]] = {
    "too_dark": ("brightness", "low"),
    "overexposed": ("saturated_share", "high"),
    "flat": ("contrast", "low"),
    # Black-and-white or faded: the classifier reads colour, and without it leans to "benign".
    "colourless": ("colourfulness", "low"),
    "blurred": ("sharpness", "low"),
}
PROBLEMS: tuple[str, ...] = ("too_small", *CHECKS, "surround")


def image_statistics(image: Image.Image) -> dict[str, float]:
    """The short side, the surround's share, and brightness, contrast, colour and sharpness of the field."""
    small, pixels, grey = _statistics_grid(image)
    frame = surround(grey)
    if frame is None:  # most photos: the whole frame, without masking (which costs as much as the rest)
        inner, mask = np.ones(grey.shape, dtype=bool), None
    else:
        inner = ~_grown(frame, RIM_PIXELS)
        mask = Image.fromarray(inner.astype(np.uint8) * 255)
    # The discrete Laplacian responds to edges and fine texture, which blur removes first.
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    if frame is not None:
        laplacian = laplacian[~_grown(~inner, 1)[1:-1, 1:-1]]  # all five pixels inside
    inside, grey_inside = (pixels, grey) if frame is None else (pixels[inner], grey[inner])
    return {
        "short_side": float(min(image.size)),
        "brightness": float(grey_inside.mean()),
        "saturated_share": float((grey_inside >= SATURATED_LEVEL).mean()),
        # The most varying colour channel: a lesion on skin may differ mostly in one channel.
        # (Pillow's histogram-based statistics: four times faster than NumPy's std here.)
        "contrast": float(max(ImageStat.Stat(small, mask).stddev)),
        "colourfulness": colourfulness(inside),
        "sharpness": float(laplacian.std()),
        "surround_share": 0.0 if frame is None else float(frame.mean()),
    }


def surround(grey: np.ndarray) -> np.ndarray | None:
    """The mask of a dermatoscope's dark surround on a grey picture, or None when it has none.

    Outside a convex field every row and column is dark from the edge to the field, so runs along
    rows and columns find the surround without a flood fill.
    """
    dark = grey < FRAME_LEVEL
    if not (dark[0, 0] and dark[0, -1] and dark[-1, 0] and dark[-1, -1]):
        return None  # most photos: a surround fills all four corners
    frame = np.zeros_like(dark)
    for axis in (0, 1):
        frame |= np.logical_and.accumulate(dark, axis=axis)
        frame |= np.flip(np.logical_and.accumulate(np.flip(dark, axis), axis=axis), axis)
    # A field is round and large: a thin or ragged one (text on a dark page) vanishes without its rim.
    field_without_rim = 1 - _grown(frame, RIM_PIXELS).mean()
    return frame if frame.mean() >= MIN_SURROUND_SHARE and field_without_rim >= MIN_FIELD_SHARE else None


def _statistics_grid(image: Image.Image) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """The image squashed to STATS_SIZE: as a picture, as float RGB values and as grey levels."""
    small = image.resize(STATS_SIZE, Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32)
    return small, pixels, pixels @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)


def _grown(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask grown by `steps` pixels (4-neighbour dilation)."""
    grown = mask.copy()
    for _ in range(steps):
        grown[1:] |= grown[:-1].copy()
        grown[:-1] |= grown[1:].copy()
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def colourfulness(pixels: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of (..., 3) RGB values: 0 for grey, about 33 for dermoscopy.

    The spread and the mean of the red-green and yellow-blue opponent channels; skin's reddish mean
    counts too, so a pale lesion on skin still scores well above a black-and-white picture.
    """
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red_green, yellow_blue = red - green, (red + green) / 2 - blue
    spread = np.hypot(red_green.std(), yellow_blue.std())
    return float(spread + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def quality_problem(statistics: dict[str, float], thresholds: dict[str, float]) -> str | None:
    """The first problem (a name of PROBLEMS) the statistics show under the thresholds, or None."""
    if statistics["short_side"] < thresholds.get("min_side", MIN_SIDE):
        return "too_small"
    for problem, (statistic, bad) in CHECKS.items():
        limit = thresholds[problem]
        value = statistics[statistic]
        if (bad == "low" and value < limit) or (bad == "high" and value > limit):
            return problem
    # Checked last: a blurred or dark picture inside a surround is told about that first.
    return "surround" if statistics.get("surround_share", 0.0) > 0 else None


def fit_thresholds(
    clean: list[dict[str, float]], damaged: dict[str, list[dict[str, float]]], tail: float
) -> dict[str, float]:
    """Thresholds halfway between the clean images' tail and the typical damaged image, per check.

    clean: statistics of clean validation images; damaged: for each problem of CHECKS, statistics of
    validation images given that problem. The clean side's `tail` quantile (its worst images) and the
    damaged side's median bound the threshold; halfway leaves room on both sides for images unlike
    the validation set.
    """
    thresholds: dict[str, float] = {"min_side": float(MIN_SIDE)}
    for problem, (statistic, bad) in CHECKS.items():
        clean_values = np.array([s[statistic] for s in clean])
        clean_edge = np.quantile(clean_values, tail if bad == "low" else 1 - tail)
        damaged_middle = np.median([s[statistic] for s in damaged[problem]])
        thresholds[problem] = float((clean_edge + damaged_middle) / 2)
    return thresholds
