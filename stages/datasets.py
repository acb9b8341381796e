"""The prepared splits of binarized MNIST: written by the prepare stage, read by later stages.

data/prepared/ holds, for split in train, valid, test: ``{split}_images.npy`` (N, 784) uint8 and
``{split}_labels.npy`` (N,) uint8, plus ``info.json``. Images are binary (0/1) except the train
images of ``dynamic`` binarization, which are the uint8 intensities (0..255) that the train stage
re-draws as Bernoulli(pixel / 255) every epoch.

``binarize`` is the one draw of Bernoulli(pixel / 255) that both use: prepare once per split
(static), the training input pipeline once per epoch and minibatch (dynamic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from stages.runtime import StageError

PREPARED = Path("data/prepared")
SPLITS = ("train", "valid", "test")
PIXELS = 784
BINARY, INTENSITY = "binary", "intensity"  # what the uint8 values of a split's images encode
RNG_ALG = "philox"  # stateless, and fast under XLA on CPU


@dataclass(frozen=True)
class Split:
    name: str
    images: np.ndarray  # (N, 784) uint8
    labels: np.ndarray  # (N,) uint8 digit labels
    encoding: str  # BINARY (0/1) or INTENSITY (0..255, drawn anew every epoch)


def load_info(directory: Path = PREPARED) -> dict:
    try:
        return json.loads((directory / "info.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{directory}/info.json not found: run the prepare stage first") from None


def load_split(name: str, directory: Path = PREPARED) -> Split:
    info = load_info(directory)
    images = np.load(directory / f"{name}_images.npy")
    labels = np.load(directory / f"{name}_labels.npy")
    if images.ndim != 2 or images.shape[1] != PIXELS or images.dtype != np.uint8:
        raise StageError(
            f"{directory}/{name}_images.npy: expected (N, 784) uint8, "
            f"got {images.shape} {images.dtype}"
        )
    if labels.shape != images.shape[:1]:
        raise StageError(
            f"{directory}/{name}_labels.npy: {labels.shape[0]} labels for {images.shape[0]} images"
        )
    return Split(name, images, labels, info["encoding"][name])


def binarize(intensities, seed):
    """x ~ Bernoulli(pixel / 255) for each pixel of uint8 ``intensities``, as float32 0/1, from a
    stateless seed (2 integers): the same seed and intensities give the same bits on any CPU."""
    uniform = tf.random.stateless_uniform(tf.shape(intensities), seed=seed, alg=RNG_ALG)
    return tf.cast(uniform < tf.cast(intensities, tf.float32) / 255.0, tf.float32)


def per_digit_means(labels: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """A table of digit, examples and the mean of each of ``values`` (per-example arrays) over
    the examples of that digit, rounded to 4 decimals."""
    frame = pd.DataFrame({"digit": labels.astype(int), **values})
    means = {name: (name, "mean") for name in values}
    return frame.groupby("digit").agg(examples=("digit", "size"), **means).reset_index().round(4)
