"""Cheap image statistics that say a picture is unusable: too small, too dark, overexposed, flat, colourless,
blurred.

Pillow and NumPy only (the serving image has no TensorFlow). The statistics are measured on the
decoded upload; `model.gate` fits the thresholds on clean validation images (so that almost none of
them is flagged) and stores them in the gate's metadata, which serving reads. Pictures decoded from
data that is mostly missing are caught earlier, by the decoder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageStat

from model.preprocessing import LUMA_WEIGHTS

# Statistics are taken on the whole frame squashed to this size, like the models' inputs: a fixed
# scale makes the sharpness of a 180-pixel dermoscopy image and a 12-megapixel photo comparable.
STATS_SIZE = (128, 128)
# Below this many pixels on the short side a lesion has no visible structure to judge (the dataset's
# images have 150 or more); a fixed floor, not fitted.
MIN_SIDE = 64
# A pixel at or above this grey level is blown out.
SATURATED_LEVEL = 250

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
PROBLEMS: tuple[str, ...] = ("too_small", *CHECKS)


def image_statistics(image: Image.Image) -> dict[str, float]:
    """Short side, brightness, blown-out share, contrast, colourfulness and sharpness of an RGB image."""
    small = image.resize(STATS_SIZE, Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32)
    grey = pixels @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    # The discrete Laplacian responds to edges and fine texture, which blur removes first.
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return {
        "short_side": float(min(image.size)),
        "brightness": float(grey.mean()),
        "saturated_share": float((grey >= SATURATED_LEVEL).mean()),
        # The most varying colour channel: a lesion on skin may differ mostly in one channel.
        # (Pillow's histogram-based statistics: four times faster than NumPy's std here.)
        "contrast": float(max(ImageStat.Stat(small).stddev)),
        "colourfulness": colourfulness(pixels),
        "sharpness": float(laplacian.std()),
    }


def colourfulness(pixels: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of (H, W, 3) RGB values: 0 for grey, about 33 for dermoscopy.

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
    return None


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
