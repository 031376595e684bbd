"""Heat map: the activation map of the class the answer is about, drawn over the photo (Pillow + NumPy)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

DISPLAY_SIZE = 320  # longest side of the picture returned to the browser or API client
# Where a dermatoscope's frame lies: the outer band of the picture (this share of each side) and the
# near-black vignette anywhere (luminance below DARK_LUMINANCE of 255).
FRAME_BORDER_SHARE = 0.1
DARK_LUMINANCE = 40
# The hot area: the part of the normalised map at or above this value.
HOT_LEVEL = 0.7
# The caveat when the map's hot area lies on the frame (page and API): the model looked at the wrong thing.
FRAME_CAVEAT = {
    "code": "heat_on_frame",
    "message": "The hottest area of the heat map lies on the dark frame or the edge of the picture, not on "
    "the lesion: the model looked at the wrong thing here, so this result is less reliable in either "
    "direction (it does not cancel advice to see a doctor). A photo with the spot in the middle and no "
    "black ring may do better.",
}
# The frame check runs on every answer (API too), on a copy this small: on 718 Test and validation
# pictures it flags exactly what the 320-px display copy flags, at a fifth of the cost (0.4 ms).
FRAME_CHECK_SIZE = 128
PAGE_JPEG_QUALITY = 85  # the page shows JPEGs: a fifth of the PNG's bytes, no visible loss at 320 px

# matplotlib's "viridis" at 9 evenly spaced points: its lightness rises steadily from dark purple to
# yellow, so "more" reads as "brighter" for readers with any form of colour blindness and in greyscale
# (a rainbow ramp such as turbo puts its brightest colour in the middle and relies on red vs green).
_ANCHORS = np.array(
    [
        [68, 1, 84],
        [71, 45, 123],
        [59, 82, 139],
        [44, 114, 142],
        [33, 145, 140],
        [40, 174, 128],
        [94, 201, 98],
        [173, 220, 48],
        [253, 231, 37],
    ],
    dtype=np.float32,
)


def normalise_map(class_map: np.ndarray) -> np.ndarray:
    """Scale an activation map to 0..1 (flat maps give all zeros)."""
    low, high = float(class_map.min()), float(class_map.max())
    if high - low < 1e-12:
        return np.zeros_like(class_map, dtype=np.float32)
    return ((class_map - low) / (high - low)).astype(np.float32)


def colourise(weights: np.ndarray) -> np.ndarray:
    """Map 0..1 values to RGB uint8 along the colour ramp."""
    position = np.clip(weights, 0, 1) * (len(_ANCHORS) - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(_ANCHORS) - 1)
    fraction = (position - lower)[..., None]
    return (_ANCHORS[lower] * (1 - fraction) + _ANCHORS[upper] * fraction).astype(np.uint8)


def overlay(photo: Image.Image, weights: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The photo (its display_copy) with the map, already map_at its size, blended over it."""
    return Image.blend(photo, Image.fromarray(colourise(weights)), alpha)


def map_at(size: tuple[int, int], class_map: np.ndarray) -> np.ndarray:
    """The normalised map resized (bicubic) to a picture's (width, height)."""
    return np.asarray(Image.fromarray(normalise_map(class_map)).resize(size, Image.Resampling.BICUBIC))


def display_copy(image: Image.Image, longest: int = DISPLAY_SIZE) -> Image.Image:
    """An RGB copy scaled (up or down) to `longest` pixels on its longest side, aspect kept."""
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def hot_area_on_frame(photo: Image.Image, weights: np.ndarray) -> bool:
    """Whether most of the map's hot area lies on the frame or vignette of the photo (its display_copy).

    weights is the map already map_at the photo's size (a flat map normalises to zeros: no hot area).
    """
    hot = weights >= HOT_LEVEL
    if not hot.any():
        return False
    return float(frame_mask(photo)[hot].mean()) > 0.5


def frame_caveats(image: Image.Image, class_map: np.ndarray) -> list[dict[str, str]]:
    """[FRAME_CAVEAT] when the class map (Prediction.class_map) is hottest on the picture's frame, else []."""
    small = display_copy(image, FRAME_CHECK_SIZE)
    return [FRAME_CAVEAT] if hot_area_on_frame(small, map_at(small.size, class_map)) else []


def frame_mask(photo: Image.Image) -> np.ndarray:
    """True where a pixel is in the outer band of the picture or near black (the vignette)."""
    height, width = photo.height, photo.width
    band_y, band_x = round(height * FRAME_BORDER_SHARE), round(width * FRAME_BORDER_SHARE)
    mask = np.ones((height, width), dtype=bool)
    mask[band_y : height - band_y, band_x : width - band_x] = False
    return mask | (np.asarray(photo.convert("L")) < DARK_LUMINANCE)


def legend(width: int = 256, height: int = 12) -> Image.Image:
    """The colour ramp from low (left) to high (right), drawn from the same anchors as the map."""
    ramp = colourise(np.linspace(0, 1, width, dtype=np.float32))
    return Image.fromarray(np.repeat(ramp[np.newaxis], height, axis=0))


def jpeg_bytes(image: Image.Image, quality: int = PAGE_JPEG_QUALITY) -> bytes:
    """Encode an image as JPEG (for the page; the API keeps PNG)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    """Encode an image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
