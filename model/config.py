"""The project's one source of truth: class names, risk groups, image size and paths.

Every stage (data preparation, training, evaluation, serving, the notebook) imports these names
instead of repeating them. This module must stay free of heavy imports: the web app imports it
in an image that has no TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# --- Classes -------------------------------------------------------------------------------------
# Folder names of the 9-class ISIC set, in the order of the model's outputs.
CLASS_NAMES: tuple[str, ...] = (
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
)
NUM_CLASSES = len(CLASS_NAMES)
MELANOMA = "melanoma"

# Grouped risk shown to users. Actinic keratosis is pre-malignant: it can progress to squamous cell
# carcinoma, so it is neither "benign" nor "malignant".
RISK_GROUPS: dict[str, tuple[str, ...]] = {
    "malignant": ("melanoma", "basal cell carcinoma", "squamous cell carcinoma"),
    "pre-malignant": ("actinic keratosis",),
    "benign": (
        "dermatofibroma",
        "nevus",
        "pigmented benign keratosis",
        "seborrheic keratosis",
        "vascular lesion",
    ),
}
RISK_OF_CLASS: dict[str, str] = {c: group for group, cs in RISK_GROUPS.items() for c in cs}

# HAM10000 `dx` codes and the class folders each one is compatible with. `akiec` covers actinic
# keratoses and intraepithelial carcinoma (Bowen's disease), which this set files under two folders.
HAM_DX_TO_CLASSES: dict[str, tuple[str, ...]] = {
    "akiec": ("actinic keratosis", "squamous cell carcinoma"),
    "bcc": ("basal cell carcinoma",),
    "bkl": ("pigmented benign keratosis", "seborrheic keratosis"),
    "df": ("dermatofibroma",),
    "mel": ("melanoma",),
    "nv": ("nevus",),
    "vasc": ("vascular lesion",),
}

# The one training label of a HAM10000 picture that isic9 does not hold, by `dx` (a deterministic
# policy, also written into the audit). bkl -> pigmented benign keratosis: isic9 files every one of
# the 478 HAM10000 bkl pictures it holds under that folder, none under seborrheic keratosis. akiec ->
# none: isic9 files HAM10000's akiec pictures under actinic keratosis (128) and squamous cell
# carcinoma (192), and dx cannot say which, so the 6 such pictures are not trained on (the HAM10000
# held-out test scores them at the level of dx, where both classes fold into akiec).
HAM_DX_TRAINING_LABEL: dict[str, str | None] = {
    "akiec": None,
    "bcc": "basal cell carcinoma",
    "bkl": "pigmented benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "nevus",
    "vasc": "vascular lesion",
}
HAM_DX_CODES: tuple[str, ...] = tuple(sorted(HAM_DX_TO_CLASSES))

# Acquisition sources. Pictures named in the HAM10000 metadata come from HAM10000; the rest from the
# ISIC Archive, whose ids number uploads in order. In Train, ids below this bound hold melanomas and
# nevi; ids above it hold melanomas and seborrheic keratoses (no nevi), so the id block is a
# confounder (model.evaluate reports figures per source).
ISIC_ARCHIVE_EARLY_IDS_END = 1000

# The served model's name and version (metadata.json, the API's answers).
MODEL_NAME = "skin-lesion-cnn"
MODEL_VERSION = "2.0.0"

# --- Images --------------------------------------------------------------------------------------
# The dataset ships 180x180 images (HAM10000 200x150); the network sees 128x128. 160x160 (runs Z1 to
# H2, docs/EXPERIMENTS.md) made the served model, which averages 8 orientations, cost 26 ms per
# image on one core: over the 15 ms serving budget. 128 px cuts the compute per view by 0.64 and lets
# a training run see about twice as many epochs in its time budget. The heat map is the 8x8 map of
# last-layer features.
IMAGE_SIZE: tuple[int, int] = (128, 128)
SOURCE_IMAGE_SIZE: tuple[int, int] = (180, 180)
# The page's script shrinks a photo to this longest side before upload (phones send 2-8 MB; the model
# needs IMAGE_SIZE and the heat map 320 px, with room left for the image gate's quality checks).
UPLOAD_MAX_SIDE = 1280
# Uploads above this many pixels are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 50_000_000
# What one bounded decode (serving, evaluation) may allocate, estimated before any pixel is decoded
# from the format, bit depth, mode and size (model.preprocessing.decode_cost_mb). 48 MB holds a
# 12-megapixel PNG; JPEGs decode at reduced scale and cost far less. With the upload itself (12 MB,
# held twice) one worker stays within 100 MB of its resting memory, four within a 512 MB container.
MAX_DECODE_MB = 48.0
# A file this many times smaller than its claimed pixel count (in pixels per byte) holds almost no
# picture: a truncated upload that declares a large size, or a blank frame. No photo compresses
# that far (a flat-colour JPEG is about 65 pixels per byte). Checked above MISSING_DATA_MIN_PIXELS,
# so small icons and test patterns are left alone.
MAX_PIXELS_PER_BYTE = 200
MISSING_DATA_MIN_PIXELS = 1_000_000
# Shades-of-grey colour constancy (Finlayson & Trezzi 2004) with Minkowski norm p=6, as used by
# the ISIC 2017/2018 winners, removes most of the camera/illumination cast between image sources.
SHADES_OF_GREY_P = 6.0

# --- The image gate (issue 19): what the classifier must not answer ------------------------------
# A small separate network (model.gate) looks at every upload before the classifier, at this size:
# enough to tell dermoscopy from everyday and phone photos, and well under a millisecond in LiteRT.
GATE_IMAGE_SIZE: tuple[int, int] = (64, 64)
# Its output classes, in order. "lesion" is the only one the classifier answers; the others are the
# stable refusal codes of the API (HTTP 422), poor_quality also covering what the image statistics of
# model.quality catch.
GATE_LESION = "lesion"
NOT_A_LESION = "not_a_lesion"
NOT_DERMOSCOPIC = "not_dermoscopic"
POOR_QUALITY = "poor_quality"
GATE_CLASSES: tuple[str, ...] = (GATE_LESION, NOT_A_LESION, NOT_DERMOSCOPIC, POOR_QUALITY)
REFUSAL_CODES: tuple[str, ...] = GATE_CLASSES[1:]
# The key of metadata.json that holds the gate (files, thresholds, figures): separate from the
# classifier's keys so that retraining the classifier can carry it over (model.train).
GATE_METADATA_KEY = "gate"
GATE_TFLITE_FILE = "gate.tflite"

# --- Data preparation ----------------------------------------------------------------------------
SEED = 1337
VALIDATION_FRACTION = 0.15
# The HAM10000 held-out test: this share of the HAM10000 lesions that have no picture in the isic9
# Test split, stratified by dx. It is never trained or tuned on.
HAM_TEST_FRACTION = 0.15
# Source names in the manifest, and the subsets of the split.
ISIC9_SOURCE = "isic9"
HAM_SOURCE = "ham10000"
TEST_SUBSETS: dict[str, str] = {"test": "isic9 official Test", "ham_test": "HAM10000 held-out test"}
# Augmentor tops every class of the training split up to this many images (originals included):
# a floor for the rare classes (dermatofibroma, vascular lesion, seborrheic keratosis, ...). The
# rest of the imbalance (5,700 nevi) stays: loss weights that evened it out lost on validation, and
# so did a floor of 1,000 (docs/EXPERIMENTS.md, runs W0, W1 and F1).
REBALANCE_TARGET_PER_CLASS = 500
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# --- Paths (environment variables override the git-ignored defaults inside the project) ---------
DATA_DIR = Path(os.environ.get("ISIC_DATA_DIR", PROJECT_ROOT / "data" / "raw" / "isic9"))
HAM_METADATA_PATH = Path(
    os.environ.get("HAM_METADATA_PATH", PROJECT_ROOT / "data" / "raw" / "HAM10000_metadata.csv")
)
HAM_IMAGES_DIR = Path(os.environ.get("HAM_IMAGES_DIR", PROJECT_ROOT / "data" / "raw" / "ham10000"))
# The gate's negatives (see /work/shared/data/README.md): everyday photos (Imagenette, one folder per
# class) and smartphone photos of skin lesions (PAD-UFES-20, with metadata.csv naming patients).
NONLESION_DIR = Path(
    os.environ.get("NONLESION_DIR", PROJECT_ROOT / "data" / "raw" / "nonlesion" / "imagenette")
)
SMARTPHONE_DIR = Path(os.environ.get("SMARTPHONE_DIR", PROJECT_ROOT / "data" / "raw" / "pad_ufes_clinical"))
# Derived data: manifests, audit, the rebalanced training images.
WORK_DIR = Path(os.environ.get("ISIC_WORK_DIR", PROJECT_ROOT / "data" / "processed"))
# The committed model that the web app serves.
MODEL_DIR = Path(os.environ.get("MODEL_DIR", PROJECT_ROOT / "models" / "skin_cnn"))
# Where a quick (smoke) run writes unless told otherwise: never over the committed model.
QUICK_MODEL_DIR = PROJECT_ROOT / "runs" / "quick"
REPORTS_DIR = PROJECT_ROOT / "reports"

# File names inside WORK_DIR and MODEL_DIR, shared by the writer and every reader.
MANIFEST_FILE = "manifest.csv"
AUDIT_JSON_FILE = "audit.json"
AUDIT_MD_FILE = "audit.md"
SPLIT_FILE = "split.csv"
SPLIT_INFO_FILE = "split.json"
AUGMENTED_DIR = "augmented"
AUGMENTED_MANIFEST_FILE = "augmented.csv"
MODEL_H5_FILE = "model.h5"
MODEL_TFLITE_FILE = "model.tflite"
METADATA_FILE = "metadata.json"
