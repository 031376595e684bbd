"""Input pipeline: the manifests of `data_prep` as batched, cached, prefetched `tf.data` datasets."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from model import config
from model.preprocessing import load_image_file


def read_training_set(work_dir: Path = config.WORK_DIR) -> pd.DataFrame:
    """The rebalanced training set written by `python -m data_prep rebalance` (path, label, ...)."""
    return _read(Path(work_dir) / config.AUGMENTED_MANIFEST_FILE)


def read_subset(subset: str, work_dir: Path = config.WORK_DIR) -> pd.DataFrame:
    """Rows of the split manifest for one subset: "train", "val" or "test"."""
    table = _read(Path(work_dir) / config.SPLIT_FILE)
    return table[table.subset == subset].reset_index(drop=True)


def label_indices(labels) -> np.ndarray:
    """Class names -> integer indices in `config.CLASS_NAMES` order."""
    index = {name: i for i, name in enumerate(config.CLASS_NAMES)}
    return np.array([index[label] for label in labels], dtype=np.int32)


def class_weights(labels: np.ndarray, num_classes: int = config.NUM_CLASSES) -> dict[int, float]:
    """Inverse-frequency loss weights (mean 1) for whatever imbalance rebalancing left."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def augmentation(seed: int = config.SEED) -> keras.Sequential:
    """Training-only augmentation on batches of raw 0..255 pixels.

    Geometry: a lesion has no orientation, so flips and a transpose give all 8 symmetries of the
    square without resampling (free-angle rotations and zooms come from the Augmentor samples;
    doing them here too cost a fifth of the CPU time and slowed convergence). Photometry:
    brightness and contrast jitter plus a random per-channel gain, so that exposure and colour cast
    (which differ between image sources) stop being reliable cues; the model's colour-constancy
    layer then removes most of the cast anyway.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            RandomTranspose(seed=seed),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
            keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
            RandomChannelGain(0.1, seed=seed),
        ],
        name="augmentation",
    )


class RandomTranspose(keras.layers.Layer):
    """Swap height and width of a random half of the (square) images in a batch."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        chosen = keras.random.uniform((keras.ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return keras.ops.where(chosen, keras.ops.transpose(images, (0, 2, 1, 3)), images)


class RandomChannelGain(keras.layers.Layer):
    """Multiply each image's R, G and B by independent random gains in [1 - delta, 1 + delta]."""

    def __init__(self, delta: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.delta = delta
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        shape = (keras.ops.shape(images)[0], 1, 1, 3)
        gain = keras.random.uniform(shape, 1 - self.delta, 1 + self.delta, seed=self.seed_generator)
        return keras.ops.clip(images * gain, 0.0, 255.0)


def make_dataset(
    paths,
    labels: np.ndarray,
    batch_size: int = 32,
    training: bool = False,
    seed: int = config.SEED,
) -> tf.data.Dataset:
    """Decode images in parallel with the shared preprocessing, cache them, batch and prefetch.

    Training datasets are shuffled every epoch and augmented after the cache, so each epoch sees
    new variations of the decoded images.
    """
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), labels))
    dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if training:
        augment = augmentation(seed)
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _decode(path, label):
    # Decoding goes through the project's one preprocessing function (Pillow), not tf.image, so
    # training sees exactly the arrays that evaluation and the web app see.
    image = tf.numpy_function(lambda p: load_image_file(p.decode()), [path], tf.float32)
    image.set_shape((*config.IMAGE_SIZE, 3))
    return image, label


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python -m data_prep all` first (or set ISIC_WORK_DIR)."
        )
    return pd.read_csv(path)
