"""Hostile uploads for the resilience tests and the benchmark: images that cost the most to decode.

Each is a valid file under the 12 MB upload limit. WORST_CASES sit just under the decode budget
(config.MAX_DECODE_MB) with enough data to pass the missing-data check, so they are decoded;
BOMBS are the cases of issue 21, which must be refused before their pixels are decoded.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image


def _banded(width: int, height: int, mode: str, rows: int = 64) -> Image.Image:
    """Mid grey with a band of noise: compresses well, yet holds enough data to be decoded."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:rows] = np.random.default_rng(0).integers(0, 256, (rows, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    return image.convert(mode)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


WORST_CASES: dict[str, Callable[[], bytes]] = {
    "PNG 8-bit grey 7000x7000": lambda: _encode(_banded(7000, 7000, "L"), "PNG"),
    "PNG palette 7000x7000": lambda: _encode(_banded(7000, 7000, "P"), "PNG"),
    "PNG RGB 4000x3000": lambda: _encode(_banded(4000, 3000, "RGB"), "PNG"),
    "PNG RGBA 2800x2100": lambda: _encode(_banded(2800, 2100, "RGBA"), "PNG"),
    "PNG 16-bit grey 4900x4900": lambda: _encode(_banded(4900, 4900, "I;16"), "PNG"),
    "JPEG progressive 4:2:0 4000x3000": lambda: _encode(
        _banded(4000, 3000, "RGB"), "JPEG", progressive=True, quality=90
    ),
    "JPEG baseline 7000x7000": lambda: _encode(_banded(7000, 7000, "RGB"), "JPEG", quality=90),
    "WebP 1700x1700": lambda: _encode(_banded(1700, 1700, "RGB"), "WEBP"),
    "TIFF RGB deflate 2400x2400": lambda: _encode(
        _banded(2400, 2400, "RGB"), "TIFF", compression="tiff_adobe_deflate"
    ),
    "GIF 7000x7000": lambda: _encode(_banded(7000, 7000, "P"), "GIF"),
}

BOMBS: dict[str, Callable[[], bytes]] = {
    "PNG 16-bit 7000x7000, blank": lambda: _encode(Image.new("I;16", (7000, 7000)), "PNG"),
    "PNG 1-bit 7000x7000, blank": lambda: _encode(Image.new("1", (7000, 7000)), "PNG"),
    "TIFF float 5000x5000": lambda: _encode(
        _banded(5000, 5000, "F"), "TIFF", compression="tiff_adobe_deflate"
    ),
    "JPEG progressive 4:4:4 7000x7000": lambda: _encode(
        _banded(7000, 7000, "RGB"), "JPEG", progressive=True, quality=90, subsampling=0
    ),
    "PNG RGB 7000x7000, truncated": lambda: _encode(_banded(7000, 7000, "RGB", rows=600), "PNG")[:60_000],
}


def build(cases: dict[str, Callable[[], bytes]]) -> dict[str, bytes]:
    """Encode every case."""
    return {name: make() for name, make in cases.items()}
