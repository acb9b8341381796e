"""The data's files: the raw MNIST arrays (written by fetch), Larochelle's fixed images (written
by fetch_larochelle) and the prepared splits of binarized MNIST (written by prepare, read by every
later stage).

data/raw/mnist/ holds ``{train,test}_{images,labels}.npy`` (60,000 then 10,000 uint8 images of
28 x 28 and their labels), data/raw/larochelle/ ``{train,valid,test}_images.npy`` (uint8 0/1,
784 pixels a row) when they were asked for. data/prepared/ holds, for split in train, valid,
test: ``{split}_images.npy`` (N, 784) uint8 and ``{split}_labels.npy`` (N,) uint8, plus
``info.json``. Images are binary (0/1) except the train images of ``dynamic`` binarization,
which are the uint8 intensities (0..255) that the train stage re-draws as Bernoulli(pixel / 255)
every epoch. A file that is missing or damaged is the one-line error of ``pipeline.reading``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latent.plumbing.pipeline import bad_file, reading

SIDE = 28  # an MNIST image is SIDE x SIDE pixels
PIXELS = SIDE * SIDE
RAW_MNIST = Path("data/raw/mnist")
RAW_LAROCHELLE = Path("data/raw/larochelle")
PREPARED = Path("data/prepared")
SPLITS = ("train", "valid", "test")
RAW_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
BINARY, INTENSITY = "binary", "intensity"  # what the uint8 values of a split's images encode


@dataclass(frozen=True)
class Split:
    name: str
    images: np.ndarray  # (N, 784) uint8
    labels: np.ndarray  # (N,) uint8 digit labels
    encoding: str  # BINARY (0/1) or INTENSITY (0..255, drawn anew every epoch)

    def first(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(images as float32, labels) of the first ``count`` examples (all, if fewer)."""
        return self.images[:count].astype(np.float32), self.labels[:count]


NPY_MAGIC = b"\x93NUMPY"


def load_array(path: Path) -> np.ndarray:
    """One .npy file, or the one-line error naming it."""
    with reading(path, "a NumPy .npy array"):
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise ValueError("no .npy header")
        return np.load(path, allow_pickle=False)


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as ``directory/<name>.npy``."""
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)


def load_raw_mnist(directory: Path = RAW_MNIST) -> dict[str, np.ndarray]:
    """The fetch stage's arrays: train_images (60000, 28, 28) uint8, train_labels, test_*."""
    arrays = {name: load_array(directory / f"{name}.npy") for name in RAW_ARRAYS}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or images.dtype != np.uint8:
            path = directory / f"{split}_images.npy"
            raise bad_file(path, f"expected (N, 28, 28) uint8, got {images.shape} {images.dtype}")
        if labels.shape != images.shape[:1]:
            path = directory / f"{split}_labels.npy"
            raise bad_file(path, f"{labels.shape[0]} labels for {images.shape[0]} images")
    return arrays


def load_larochelle(directory: Path = RAW_LAROCHELLE) -> dict[str, np.ndarray]:
    """Larochelle's fixed images by split, those that fetch_larochelle wrote."""
    paths = {split: directory / f"{split}_images.npy" for split in SPLITS}
    return {split: load_array(path) for split, path in paths.items() if path.exists()}


def save_prepared(directory: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The prepared splits' images and labels (uint8) into ``directory``."""
    for name, (images, labels) in splits.items():
        save_arrays(
            directory, {f"{name}_images": images, f"{name}_labels": labels.astype(np.uint8)}
        )


def load_info(directory: Path = PREPARED) -> dict:
    path = directory / "info.json"
    with reading(path, "JSON"):
        info = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict) or set(info.get("encoding", ())) != set(SPLITS):
        raise bad_file(path, "not the info the prepare stage writes (no encoding of each split)")
    return info


def load_split(name: str, directory: Path = PREPARED) -> Split:
    info = load_info(directory)
    images_path, labels_path = directory / f"{name}_images.npy", directory / f"{name}_labels.npy"
    images, labels = load_array(images_path), load_array(labels_path)
    if images.ndim != 2 or images.shape[1] != PIXELS or images.dtype != np.uint8:
        raise bad_file(images_path, f"expected (N, 784) uint8, got {images.shape} {images.dtype}")
    if labels.shape != images.shape[:1]:
        raise bad_file(labels_path, f"{labels.shape[0]} labels for {images.shape[0]} images")
    return Split(name, images, labels, info["encoding"][name])


def per_digit_means(labels: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """A table of digit, examples and the mean of each of ``values`` (per-example arrays) over
    the examples of that digit, rounded to 4 decimals."""
    frame = pd.DataFrame({"digit": labels.astype(int), **values})
    means = {name: (name, "mean") for name in values}
    return frame.groupby("digit").agg(examples=("digit", "size"), **means).reset_index().round(4)
