"""Binarized MNIST: the splits and the four binarizations.

valid = the last 10k of the 60k training images (the split the literature uses; a smaller fixture
keeps the same proportion: the last sixth).
- static: every pixel one Bernoulli draw with its intensity pixel/255 as probability, seeded
  (Larochelle & Murray's procedure, with our own seed; ``binarize``, the same draw the training
  input pipeline makes for dynamic binarization).
- dynamic: train kept as intensities and re-drawn every epoch by the training input pipeline;
  valid and test drawn once, exactly as ``static`` draws them.
- threshold: pixel/255 > 0.5.
- larochelle: Larochelle & Murray's fixed files as they are; the digit labels are those of the
  MNIST images they were drawn from, after checking that every image is a possible draw of its
  MNIST image (no pixel on where the intensity is 0).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from latent.data.datasets import BINARY, INTENSITY, PIXELS, RAW_LAROCHELLE, SPLITS
from latent.data.sources import DataError
from latent.plumbing import streams

VALID_SHARE = 6  # valid = the last 1/6 of the training images: 10,000 of 60,000


def binarize(intensities, seed):
    """x ~ Bernoulli(pixel / 255) for each pixel of uint8 ``intensities``, as float32 0/1, from a
    stateless seed (2 integers): the same seed and intensities give the same bits on any CPU."""
    uniform = tf.random.stateless_uniform(tf.shape(intensities), seed=seed, alg=streams.ALGORITHM)
    return tf.cast(uniform < tf.cast(intensities, tf.float32) / 255.0, tf.float32)


def split_mnist(raw: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images (N, 784) uint8 intensities, labels) for train, valid (last 10k of 60k) and test."""
    train_x = raw["train_images"].reshape(-1, PIXELS)
    test_x = raw["test_images"].reshape(-1, PIXELS)
    cut = len(train_x) - len(train_x) // VALID_SHARE
    return {
        "train": (train_x[:cut], raw["train_labels"][:cut]),
        "valid": (train_x[cut:], raw["train_labels"][cut:]),
        "test": (test_x, raw["test_labels"]),
    }


def bernoulli_draw(intensities: np.ndarray, seed: int, split: str) -> np.ndarray:
    """One Bernoulli(pixel / 255) draw per pixel, as uint8 0/1, seeded by (seed, split)."""
    key = streams.key("static_binarization", seed, SPLITS.index(split))
    return binarize(intensities, key).numpy().astype(np.uint8)


def threshold(intensities: np.ndarray) -> np.ndarray:
    """1 where pixel / 255 > 0.5, i.e. pixel >= 128."""
    return (intensities.astype(np.float32) / np.float32(255) > 0.5).astype(np.uint8)


def larochelle_labels(fixed: np.ndarray, intensities: np.ndarray, labels: np.ndarray, split: str):
    """The MNIST labels, once every fixed image is shown to be a draw of its MNIST image."""
    if fixed.shape != intensities.shape:
        raise DataError(
            f"larochelle {split}: {fixed.shape} images, MNIST {split} has {intensities.shape}"
        )
    impossible = np.any(fixed > (intensities > 0), axis=1)
    if impossible.any():
        raise DataError(
            f"larochelle {split}: {int(impossible.sum())} images have pixels on where the MNIST "
            f"image in the same position is blank (first: index {int(np.argmax(impossible))}), so "
            "the files are not in MNIST order and no labels can be attached"
        )
    return labels


def prepare(
    raw: dict[str, np.ndarray],
    binarization: str,
    seed: int,
    fixed: dict[str, np.ndarray] | None = None,
):
    """{split: (images, labels)} and {split: BINARY | INTENSITY} for one binarization."""
    mnist = split_mnist(raw)
    splits, encodings = {}, {}
    for name, (intensities, labels) in mnist.items():
        kind = BINARY
        if binarization == "static" or (binarization == "dynamic" and name != "train"):
            images = bernoulli_draw(intensities, seed, name)
        elif binarization == "dynamic":
            images, kind = intensities, INTENSITY
        elif binarization == "threshold":
            images = threshold(intensities)
        elif binarization == "larochelle":
            if not fixed or name not in fixed:
                raise DataError(
                    f"{RAW_LAROCHELLE}/{name}_images.npy not found: "
                    "run `dvc repro fetch_larochelle`"
                )
            images = fixed[name]
            labels = larochelle_labels(images, intensities, labels, name)
        else:
            raise ValueError(binarization)
        splits[name], encodings[name] = (np.ascontiguousarray(images), labels), kind
    return splits, encodings
