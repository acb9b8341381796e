"""The prepare stage: split sizes, every binarization, determinism, Larochelle labels."""

import hashlib

import numpy as np
import pytest

from latent.data import binarization
from latent.data.datasets import load_split
from latent.data.sources import DataError
from stages import prepare
from tests import fixtures
from tests.conftest import REPO


@pytest.fixture(scope="module")
def raw():
    return fixtures.mnist_arrays(train=1200, test=200)


def test_valid_is_the_last_sixth_of_the_training_images(raw):
    splits, _ = binarization.prepare(raw, "threshold", 0)
    assert [len(splits[s][0]) for s in ("train", "valid", "test")] == [1000, 200, 200]
    assert np.array_equal(splits["valid"][1], raw["train_labels"][1000:])
    real_sized = {
        "train_images": np.zeros((60000, 28, 28), np.uint8),
        "train_labels": np.zeros(60000, np.uint8),
        "test_images": np.zeros((10000, 28, 28), np.uint8),
        "test_labels": np.zeros(10000, np.uint8),
    }
    assert [len(v[0]) for v in binarization.split_mnist(real_sized).values()] == [
        50000,
        10000,
        10000,
    ]


def test_static_binarization_is_bernoulli_of_the_intensities(raw):
    splits, encodings = binarization.prepare(raw, "static", 3)
    assert encodings == {"train": "binary", "valid": "binary", "test": "binary"}
    intensities = binarization.split_mnist(raw)["train"][0] / 255
    x = splits["train"][0]
    assert set(np.unique(x)) <= {0, 1}
    assert not x[intensities == 0].any() and x[intensities == 1].all()
    middle = (intensities > 0.3) & (intensities < 0.7)
    # the draws' mean matches the probabilities' mean within 4 standard errors
    p = intensities[middle]
    assert abs(x[middle].mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / p.size


def test_same_seed_same_bits_other_seed_other_bits(raw):
    a, _ = binarization.prepare(raw, "static", 1)
    b, _ = binarization.prepare(raw, "static", 1)
    c, _ = binarization.prepare(raw, "static", 2)
    for split in a:
        assert np.array_equal(a[split][0], b[split][0])
        assert not np.array_equal(a[split][0], c[split][0])


def test_dynamic_keeps_train_intensities_and_draws_valid_test_like_static(raw):
    dynamic, encodings = binarization.prepare(raw, "dynamic", 5)
    static, _ = binarization.prepare(raw, "static", 5)
    assert encodings["train"] == "intensity"
    assert np.array_equal(dynamic["train"][0], binarization.split_mnist(raw)["train"][0])
    for split in ("valid", "test"):
        assert np.array_equal(dynamic[split][0], static[split][0])


def test_threshold_is_intensity_above_one_half(raw):
    splits, _ = binarization.prepare(raw, "threshold", 0)
    intensities = binarization.split_mnist(raw)["test"][0]
    assert np.array_equal(splits["test"][0], (intensities >= 128).astype(np.uint8))


def test_larochelle_files_get_the_labels_of_their_mnist_images(raw):
    fixed = fixtures.larochelle_images(raw)
    splits, _ = binarization.prepare(raw, "larochelle", 0, fixed)
    assert np.array_equal(splits["train"][0], fixed["train"])
    assert np.array_equal(splits["test"][1], raw["test_labels"])


def test_larochelle_files_out_of_order_are_an_error(raw):
    fixed = fixtures.larochelle_images(raw)
    fixed["test"] = fixed["test"][::-1].copy()
    with pytest.raises(DataError, match="larochelle test: .* not in MNIST order"):
        binarization.prepare(raw, "larochelle", 0, fixed)


def run_stage(directory, raw, binarization="static", seed=0):
    (directory / "data/raw/mnist").mkdir(parents=True, exist_ok=True)
    for name, array in raw.items():
        np.save(directory / f"data/raw/mnist/{name}.npy", array)
    text = (REPO / "params.yaml").read_text()
    text = text.replace("binarization: static", f"binarization: {binarization}")
    text = text.replace("binarization_seed: 0", f"binarization_seed: {seed}")
    (directory / "params.yaml").write_text(text)
    prepare.main()
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((directory / "data/prepared").iterdir())
    }


def test_stage_outputs_are_byte_identical_for_the_same_params(in_tmp_dir, raw):
    first = run_stage(in_tmp_dir, raw)
    second = run_stage(in_tmp_dir, raw)
    assert first == second
    assert set(first) == {
        f"{s}_{k}.npy" for s in ("train", "valid", "test") for k in ("images", "labels")
    } | {"info.json"}
    split = load_split("valid")
    assert split.images.shape == (200, 784) and split.encoding == "binary"
    assert run_stage(in_tmp_dir, raw, seed=1) != first


def test_bad_param_leaves_earlier_outputs_untouched(in_tmp_dir, raw):
    from latent.plumbing.params import ParamError

    before = run_stage(in_tmp_dir, raw)
    with pytest.raises(ParamError, match="binarization = 'fuzzy' is not allowed"):
        run_stage(in_tmp_dir, raw, binarization="fuzzy")
    after = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((in_tmp_dir / "data/prepared").iterdir())
    }
    assert after == before
