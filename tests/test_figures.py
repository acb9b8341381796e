"""The figures stage on fixture models with latent_dim 1, 2 and 5."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from stages import figures, vae
from tests.conftest import chdir, make_workspace


@pytest.fixture(scope="module", params=[1, 2, 5])
def rendered(request, tmp_path_factory):
    latent_dim = request.param
    workspace = make_workspace(
        tmp_path_factory.mktemp(f"latent{latent_dim}"), latent_dim=latent_dim, epochs=2
    )
    with chdir(workspace):
        figures.main()
    return latent_dim, workspace


def test_every_declared_figure_is_a_valid_image_of_the_declared_size(rendered):
    _, workspace = rendered
    written = sorted(p.name for p in (workspace / "figures").iterdir())
    assert written == sorted(figures.SIZES)
    for name in written:
        with Image.open(workspace / "figures" / name) as image:
            assert image.format == ("GIF" if name.endswith(".gif") else "PNG")
            assert image.size == figures.pixel_size(name), name
            if name.endswith(".gif"):
                assert image.n_frames == 3  # before training and after each of the 2 epochs


def test_figures_are_reproducible(rendered):
    _, workspace = rendered
    before = {p.name: p.read_bytes() for p in (workspace / "figures").iterdir()}
    with chdir(workspace):
        figures.main()
    assert {p.name: p.read_bytes() for p in (workspace / "figures").iterdir()} == before


def test_projection_is_said_on_the_figure(rendered):
    latent_dim, workspace = rendered
    _, decoder = vae.load_networks(workspace / "models")
    means = np.random.default_rng(0).standard_normal((50, latent_dim)).astype(np.float32)
    view = figures.LatentView.fit(means)
    assert ("PCA projection" in view.note()) == (latent_dim > 2)
    labels = view.axis_labels()
    assert labels == {1: ("z1", "digit (jittered)"), 2: ("z1", "z2")}.get(latent_dim, labels)
    if latent_dim > 2:
        assert labels[0].startswith("principal direction 1")
        np.testing.assert_allclose(view.directions.T @ view.directions, np.eye(2), atol=1e-6)


def test_manifold_decodes_exactly_the_grid_it_claims(rendered):
    latent_dim, workspace = rendered
    _, decoder = vae.load_networks(workspace / "models")
    means = np.random.default_rng(0).standard_normal((50, latent_dim)).astype(np.float32)
    view = figures.LatentView.fit(means)
    fig, decoded, points = figures.manifold_figure(decoder, 6, view)
    fig.clf()
    values = np.linspace(-3, 3, 6)
    if latent_dim == 1:
        assert points.shape == (1, 6, 1)
        np.testing.assert_array_equal(points[0, :, 0], values)
    else:
        grid = points if latent_dim == 2 else points @ view.directions  # back to (a, b)
        assert grid.shape == (6, 6, 2)
        for i in range(6):
            for j in range(6):  # left to right z1 grows, top to bottom z2 falls
                np.testing.assert_allclose(grid[i, j], [values[j], values[5 - i]], atol=1e-6)
        if latent_dim > 2:  # the other coordinates sit at the prior mean 0
            rest = points.reshape(-1, latent_dim) - grid.reshape(-1, 2) @ view.directions.T
            np.testing.assert_allclose(rest, 0, atol=1e-6)
    expected = tf.sigmoid(decoder(points.reshape(-1, latent_dim).astype(np.float32))).numpy()
    np.testing.assert_allclose(decoded.reshape(len(expected), -1), expected, rtol=1e-6)


def test_snapshot_frames_keep_first_and_last():
    assert figures.snapshot_frames(5, 8) == [0, 1, 2, 3, 4]
    frames = figures.snapshot_frames(101, 8)
    assert len(frames) == 8 and frames[0] == 0 and frames[-1] == 100 and frames[:3] == [0, 1, 2]
