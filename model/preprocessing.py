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

# ITU-R 601 luma: the grey of PIL's convert("L") and ImageEnhance.Color.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# HEIF (an iPhone's HEIC) and AVIF files: an ISO media box "ftyp" with one of these brands. Pillow
# reads neither without plugins; the person is told how to get a JPEG instead.
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
HEIF_MESSAGE = (
    "HEIC and AVIF photos (an iPhone's default format) cannot be read here. Please upload a JPEG or PNG: "
    "on an iPhone, choose Settings > Camera > Formats > Most Compatible, or export the photo as JPEG."
)
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
    """More pixels, or a costlier decode, than we allow (a decompression bomb or an absurd size)."""


class IncompleteImage(ImageError):
    """The file holds far too little data for the size it claims: truncated, or a blank frame."""


# Bytes per pixel of Pillow's in-memory storage: 1 for 8-bit single-band modes ("1" included),
# 2 for 16-bit greyscale, 4 for everything else (RGB is stored as 4 bytes too).
def _mode_bytes(mode: str) -> int:
    if mode.startswith("I;16"):
        return 2
    if mode in ("I", "F") or Image.getmodebands(mode) > 1:
        return 4
    return 1


# Extra copies some decoders make of the whole frame, measured with tests/test_resilience.py:
# libtiff decodes into its own buffer first, and Pillow's WebP decoder goes through RGBA buffers.
_FORMAT_COPIES = {"TIFF": 2.0, "WEBP": 4.0}
# Reducing an image with alpha premultiplies it first, in a second full-size copy.
_REDUCE_COPIES = {"LA": 2.0, "RGBA": 2.0}


def decode_image(data: bytes, draft_size: tuple[int, int] | None = config.IMAGE_SIZE) -> Image.Image:
    """Decode image bytes into an upright 8-bit RGB Pillow image, or raise ImageError.

    With draft_size (serving, evaluation) the decode is bounded: a file that claims far more pixels
    than its bytes can hold is refused (IncompleteImage), the cost is estimated before any pixel is
    decoded and refused above config.MAX_DECODE_MB (ImageTooLarge), and the image is reduced to about
    twice draft_size while decoding (JPEG) or right after (other formats), before any conversion.
    None decodes every pixel with no budget: for offline tools on our own files (hashing, writing
    augmented copies). Only the first frame of an animation or multi-page file is ever decoded.
    """
    if not data:
        raise ImageError("The file is empty.")
    image = _open(data)
    _check_pixel_count(image.size)
    if draft_size is not None:
        _check_data_is_present(image.size, len(data))
        image = _bounded_load(image, draft_size)
    else:
        _load(image)
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def decode_cost_mb(image: Image.Image, declared_size: tuple[int, int] | None = None) -> float:
    """Estimated peak memory (MB) of decoding an opened, not yet loaded image's first frame.

    image.size is the size it will decode at (after a JPEG draft); declared_size is the size the
    file declares, which a progressive JPEG pays for whatever the scale.
    """
    copies = _FORMAT_COPIES.get(image.format, 1.0) * _REDUCE_COPIES.get(image.mode, 1.0)
    cost = image.width * image.height * _mode_bytes(image.mode) * copies
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        # A progressive JPEG keeps every DCT coefficient (2 bytes per sample) of the full-size
        # image until its last scan.
        cost += _jpeg_coefficient_bytes(getattr(image, "layer", None), declared_size or image.size)
    return cost / 2**20


def to_model_input(image: Image.Image, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Resize an RGB image to the model's input: float32 array (height, width, 3) in 0..255."""
    if image.size != size:
        # The whole frame is squashed, not cropped: that is how the dataset's 600x450 originals
        # became 180x180, so the model has only ever seen lesions with this distortion.
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def scaled_saturation(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Model inputs with their colour saturation scaled by factor (0: grey), as PIL's ImageEnhance.Color."""
    grey = pixels @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.clip(grey[..., None] + factor * (pixels - grey[..., None]), 0, 255).astype(np.float32)


def load_image_file(path: str | Path, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Read an image file from disk into the model's input array."""
    return to_model_input(decode_image(Path(path).read_bytes(), size), size)


def load_image_files(paths, size: tuple[int, int] = config.IMAGE_SIZE) -> np.ndarray:
    """Read image files into one batch of model inputs: float32 (n, height, width, 3) in 0..255."""
    return np.stack([load_image_file(path, size) for path in paths])


def _bounded_load(image: Image.Image, draft_size: tuple[int, int]) -> Image.Image:
    declared_size, floor = image.size, (draft_size[0] * 2, draft_size[1] * 2)
    # JPEG can decode at 1/2, 1/4 or 1/8 scale: a 12-megapixel phone photo then costs a fraction of
    # a full decode. Ask for at least twice the model size so the final resize still anti-aliases.
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", floor)
    if decode_cost_mb(image, declared_size) > config.MAX_DECODE_MB:
        raise ImageTooLarge(
            f"The image is too large to decode ({declared_size[0]}x{declared_size[1]} pixels, "
            f"{image.format} {image.mode}). Please upload a smaller photo, or a JPEG (PNG: at most "
            f"{int(config.MAX_DECODE_MB * 2**20 / 4 / 1e6)} megapixels)."
        )
    _load(image)
    return _reduce(image, floor)


def _reduce(image: Image.Image, floor: tuple[int, int]) -> Image.Image:
    """Shrink by a whole factor that keeps both sides at least `floor`, in the decoded mode.

    Done before any mode conversion, so converting to RGB and compositing alpha touch the small
    image; a box filter (reduce) averages every source pixel. "1", "P" and 16-bit modes have no
    reduce, and palette indices cannot be averaged, so those take every n-th pixel.
    """
    factor = min(image.width // floor[0], image.height // floor[1])
    if factor < 2:
        return image
    if image.mode in ("1", "P", "PA") or image.mode.startswith("I;16"):
        size = (-(-image.width // factor), -(-image.height // factor))
        return image.resize(size, Image.Resampling.NEAREST)
    return image.reduce(factor)


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("The image is truncated or corrupt.") from exc


def _jpeg_coefficient_bytes(layers, size: tuple[int, int]) -> int:
    # layers (Pillow's JpegImageFile.layer): (component id, horizontal sampling, vertical sampling,
    # table) per component; subsampled chroma holds fewer coefficients.
    layers = layers or [("", 1, 1, 0)] * 3
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    return sum(-(-size[0] * layer[1] // h_max) * -(-size[1] * layer[2] // v_max) * 2 for layer in layers)


def _check_data_is_present(size: tuple[int, int], length: int) -> None:
    pixels = size[0] * size[1]
    if pixels > config.MISSING_DATA_MIN_PIXELS and pixels > length * config.MAX_PIXELS_PER_BYTE:
        raise IncompleteImage(
            f"The file is too small for the {size[0]}x{size[1]} picture it claims to hold: most of the "
            "image is missing or blank. Please upload the whole photo."
        )


def _open(data: bytes) -> Image.Image:
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise UnsupportedImage(HEIF_MESSAGE)
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between 1x and 2x its own pixel limit; we decide below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            limit = config.MAX_IMAGE_PIXELS // 1_000_000
            raise ImageTooLarge(
                f"The image is too large: it has more than {limit} megapixels. "
                "Upload the camera's original photo or a smaller copy."
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if data.startswith(_SIGNATURES):
                raise ImageError("The image is truncated or corrupt.") from exc
            raise UnsupportedImage(
                "The file is not an image we can read. Please upload a JPEG or PNG photo."
            ) from exc
    if image.format in ("HEIF", "AVIF"):
        raise UnsupportedImage(HEIF_MESSAGE)
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
            f"the limit is {config.MAX_IMAGE_PIXELS // 1_000_000} megapixels. Upload the camera's "
            "original photo or a smaller copy."
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
        if rgba.getchannel("A").getextrema()[1] == 0:
            # Wholly transparent: on white it would read as "overexposed", which is not the problem.
            raise IncompleteImage(
                "The picture is fully transparent: there is nothing in it to judge. Upload the photo "
                "itself, not an empty layer or a cut-out mask."
            )
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
