"""Input pipeline: the manifests of `data_prep` as batched, cached, prefetched `tf.data` datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from model import config
from model.preprocessing import load_image_file

# Photometric augmentation strengths (fractions of the value range / of each channel).
CONTRAST_DELTA = 0.2
BRIGHTNESS_DELTA = 0.15
CHANNEL_GAIN_DELTA = 0.1


# The acquisition sources of `image_sources`.
HAM_SOURCE = "HAM10000"
EARLY_ARCHIVE_SOURCE = "ISIC archive, early ids"
LATER_ARCHIVE_SOURCE = "ISIC archive, later ids"


class DataMismatch(ValueError):
    """A step was given data it must not use: a model folder or rebalanced set of another split than
    the work folder's, or a final fit where a run chosen on validation is needed."""


def read_training_set(work_dir: Path = config.WORK_DIR) -> pd.DataFrame:
    """The rebalanced training set written by `python -m data_prep rebalance` (path, label, ...).

    DataMismatch when a picture of it does not derive from this split's train subset: a set left
    from an earlier split would put validation and test pictures into training.
    """
    table = _read(Path(work_dir) / config.AUGMENTED_MANIFEST_FILE)
    foreign = ~table.source_pixel_hash.isin(set(read_subset("train", work_dir).pixel_hash))
    if foreign.any():
        raise DataMismatch(
            f"{foreign.sum()} pictures of {config.AUGMENTED_MANIFEST_FILE} in {work_dir} do not derive from "
            "the train subset of its split.csv: the rebalanced set was made from another split. Run "
            "`python -m data_prep rebalance` (or `python -m data_prep all`) again."
        )
    return table


def read_split_info(work_dir: Path = config.WORK_DIR) -> dict:
    """split.json of `python -m data_prep split`: the split's content hash and its counts."""
    return json.loads(_existing(Path(work_dir) / config.SPLIT_INFO_FILE).read_text())


def check_model_split(model_dir: Path, work_dir: Path = config.WORK_DIR) -> None:
    """DataMismatch unless the model was trained on the work folder's split (its test sets held out)."""
    metadata_path = Path(model_dir) / config.METADATA_FILE
    if not metadata_path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a model folder (no {config.METADATA_FILE}): give the folder that "
            "`python -m model.train` wrote (its --out-dir; the committed model is models/skin_cnn)"
        )
    metadata = json.loads(metadata_path.read_text())
    recorded = metadata.get("data", {}).get("split_content_hash")
    current = read_split_info(work_dir)["content_hash"]
    if recorded and recorded != current:
        raise DataMismatch(
            f"{model_dir} was trained on split {recorded[:12]}, but {work_dir} holds split {current[:12]}: "
            "its validation and test pictures may be this model's training pictures. Give the --work-dir "
            "the model was trained with, or retrain it on this split."
        )


def augmentor_floor(training_set: pd.DataFrame) -> int | None:
    """The count Augmentor topped classes up to (None when no class needed it), read from the set."""
    topped = training_set[training_set.augmented].label.unique()
    counts = training_set[training_set.label.isin(topped)].label.value_counts()
    return int(counts.max()) if len(counts) else None


def read_subset(subset: str, work_dir: Path = config.WORK_DIR) -> pd.DataFrame:
    """Rows of the split manifest for one subset: "train", "val" or "test"."""
    table = _read(Path(work_dir) / config.SPLIT_FILE)
    return table[table.subset == subset].reset_index(drop=True)


def label_indices(labels) -> np.ndarray:
    """Class names -> integer indices in `config.CLASS_NAMES` order."""
    index = {name: i for i, name in enumerate(config.CLASS_NAMES)}
    return np.array([index[label] for label in labels], dtype=np.int32)


def image_sources(table: pd.DataFrame, work_dir: Path = config.WORK_DIR) -> pd.Series:
    """The acquisition source of each row of a manifest: HAM10000, or an ISIC Archive id block.

    Augmentor samples take the source of the picture they were made from.
    """
    split = _read(Path(work_dir) / config.SPLIT_FILE).set_index("image_id")
    image_ids = table["source_image_id"] if "source_image_id" in table else table["image_id"]
    in_ham = split.lesion_id.reindex(image_ids).notna().to_numpy()
    # ISIC ids are "ISIC_<number>"; a name without one (a renamed copy) counts as a later upload.
    numbers = pd.to_numeric(image_ids.str.extract(r"ISIC_(\d+)")[0], errors="coerce").fillna(np.inf)
    archive = np.where(
        numbers.to_numpy() < config.ISIC_ARCHIVE_EARLY_IDS_END,
        EARLY_ARCHIVE_SOURCE,
        LATER_ARCHIVE_SOURCE,
    )
    return pd.Series(np.where(in_ham, HAM_SOURCE, archive), index=table.index, name="source")


def random_orientation(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One of the 8 symmetries of the square, drawn with a stateless (2,) seed.

    A lesion has no orientation, and these need no resampling (free-angle rotations and zooms
    come from the Augmentor samples).
    """
    choice = tf.random.stateless_uniform((), seed, 0, 8, dtype=tf.int32)
    image = tf.image.rot90(image, choice % 4)
    return tf.cond(choice >= 4, lambda: tf.image.flip_left_right(image), lambda: image)


def random_view(image: tf.Tensor, seed: tf.Tensor, crop_size: int | tf.Variable = 0) -> tf.Tensor:
    """A random orientation of the image and, if crop_size > 0, a random crop_size square of it.

    Crops move the lesion around the frame and cut off corners and borders, where vignetting and
    rulers (which differ between image sources) live. crop_size may be a tf.Variable that training
    changes between epochs (progressive resizing).
    """
    image = random_orientation(image, seed)
    if isinstance(crop_size, int) and crop_size <= 0:
        return image
    crop_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    size = (crop_size, crop_size, 3) if isinstance(crop_size, int) else tf.stack([crop_size, crop_size, 3])
    return tf.image.stateless_random_crop(image, size, crop_seed)


def photometric_jitter(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random contrast, brightness and per-channel gain for a batch of 0..255 pixels (float32 out).

    Exposure and colour cast differ between image sources; jittering them stops them being
    reliable cues (the model's colour-constancy layer then removes most of the cast anyway).
    """
    images = tf.cast(images, tf.float32)
    contrast_seed, brightness_seed, gain_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    batch = tf.shape(images)[0]
    contrast = tf.random.stateless_uniform(
        (batch, 1, 1, 1), contrast_seed, 1 - CONTRAST_DELTA, 1 + CONTRAST_DELTA
    )
    brightness = 255.0 * tf.random.stateless_uniform(
        (batch, 1, 1, 1), brightness_seed, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA
    )
    gain = tf.random.stateless_uniform(
        (batch, 1, 1, 3), gain_seed, 1 - CHANNEL_GAIN_DELTA, 1 + CHANNEL_GAIN_DELTA
    )
    mean = tf.reduce_mean(images, axis=(1, 2), keepdims=True)
    # ((x - mean) * contrast + mean + brightness) * gain, folded into one multiply-add per pixel.
    scale = contrast * gain
    offset = ((1 - contrast) * mean + brightness) * gain
    return tf.clip_by_value(images * scale + offset, 0.0, 255.0)


def make_dataset(
    paths,
    labels: np.ndarray,
    batch_size: int = 32,
    training: bool = False,
    seed: int = config.SEED,
    crop_size: int | tf.Variable = 0,
) -> tf.data.Dataset:
    """Decode images in parallel with the shared preprocessing, cache them, batch and prefetch.

    Training datasets are shuffled every epoch and augmented after the cache, so each epoch sees
    new variations of the decoded images. Batches are float32 pixels in 0..255 and labels.
    crop_size > 0 trains on random square crops of that size (at the same scale, so lesions keep
    their apparent size).
    """
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), labels))
    dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.cache()  # uint8: a quarter of the memory, and exact (pixels are integers)
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        dataset = _with_seeds(dataset, seed).map(
            lambda example, image_seed: (random_view(example[0], image_seed, crop_size), *example[1:]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.batch(batch_size)
    if training:
        dataset = _with_seeds(dataset, seed + 1).map(
            lambda batch, batch_seed: (photometric_jitter(batch[0], batch_seed), *batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(lambda images, *rest: (tf.cast(images, tf.float32), *rest))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _with_seeds(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    # A stateless seed per element, drawn anew each epoch from the run's seed: reproducible runs
    # and fresh variations every epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds)


def _decode(path, label):
    # Decoding goes through the project's one preprocessing function (Pillow), not tf.image, so
    # training sees exactly the arrays that evaluation and the web app see.
    image = tf.numpy_function(lambda p: load_image_file(p.decode()).astype(np.uint8), [path], tf.uint8)
    image.set_shape((*config.IMAGE_SIZE, 3))
    return image, label


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(_existing(path))


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python -m data_prep all` first (or set ISIC_WORK_DIR)."
        )
    return path
