"""The one preprocessing definition: bytes or file -> RGB array of the model's input size.

Training, evaluation, serving and the notebook all call `load_image_file` or `decode_image` plus
`to_model_input`. Everything after that (colour constancy, rescaling) lives inside the model, so the
saved model takes raw pixels and serving cannot drift from training. Pillow and NumPy only: the
serving image has no TensorFlow.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model import config

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "MPO")
# Leading bytes of the formats we read: a file that starts like one but fails to open is corrupt,
# not of the wrong type.
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF",
)


class ImageError(ValueError):
    """An upload or file that is not a usable image; the message is safe to show to a user."""


class UnsupportedImage(ImageError):
    """Not an image, or an image format we do not read."""


class ImageTooLarge(ImageError):
    """More pixels than we decode (a decompression bomb or an absurd size)."""


def decode_image(data: bytes, draft_size: tuple[int, int] | None = config.IMAGE_SIZE) -> Image.Image:
    """Decode image bytes into an upright 8-bit RGB Pillow image, or raise ImageError.

    draft_size lets a large JPEG decode at reduced scale for a model of that input size;
    None decodes every pixel (for hashing and for writing augmented copies).
    """
    if not data:
        raise ImageError("The file is empty.")
    image = _open(data)
    _check_pixel_count(image.size)
    # JPEG can decode at 1/2, 1/4 or 1/8 scale: a 12-megapixel phone photo then costs a fraction of
    # a full decode. Ask for at least twice the model size so the final resize still anti-aliases.
    if draft_size is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_size[0] * 2, draft_size[1] * 2))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("The image is truncated or corrupt.") from exc
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def to_model_input(image: Image.Image, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Resize an RGB image to the model's input: float32 array (height, width, 3) in 0..255."""
    if image.size != size:
        # The whole frame is squashed, not cropped: that is how the dataset's 600x450 originals
        # became 180x180, so the model has only ever seen lesions with this distortion.
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def load_image_file(path: str | Path, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Read an image file from disk into the model's input array."""
    return to_model_input(decode_image(Path(path).read_bytes(), size), size)


def load_image_files(paths, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Read image files into one batch of model inputs: float32 (n, height, width, 3) in 0..255."""
    return np.stack([load_image_file(path, size) for path in paths])


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between 1x and 2x its own pixel limit; we decide below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge("The image is too large: it has more pixels than we decode.") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if data.startswith(_SIGNATURES):
                raise ImageError("The image is truncated or corrupt.") from exc
            raise UnsupportedImage(
                "The file is not an image we can read. Please upload a JPEG or PNG photo."
            ) from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"Unsupported image format {image.format}. Please upload a JPEG or PNG photo.")
    return image


def _check_pixel_count(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    if width * height > config.MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"The image is too large ({width}x{height} pixels); "
            f"the limit is {config.MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit PNGs: Pillow's convert("RGB") clips instead of scaling, which gives a white image.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry no lesion; put them on white rather than on undefined colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
