"""The figures stage on fixture models with latent_dim 1, 2 and 5 and a flow posterior: every
image opens at its declared size, is not blank, has the panels a reader expects, and is the
same bytes when drawn again."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from latent.model import vae
from latent.plotting import canvas, pictures
from latent.plotting.latent_view import LatentView
from latent.records import model_files
from stages import figures
from tests.conftest import chdir, make_workspace

EPOCHS = 2


def panel_count(path, min_run=60, tolerance=4) -> int:
    """Axes frames in an image: a frame's top and bottom edges are long dark horizontal runs
    with the same x extent (within ``tolerance`` pixels) on two separate rows."""
    dark = np.asarray(Image.open(path).convert("L")) < 100
    extents: list[tuple[int, int, list[int]]] = []  # (start, end, rows)
    for y, row in enumerate(dark):
        changes = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        for start, end in zip(changes[::2], changes[1::2]):
            if end - start < min_run:
                continue
            same = [e for e in extents if abs(e[0] - start) <= tolerance >= abs(e[1] - end)]
            if same:
                same[0][2].append(y)
            else:
                extents.append((start, end, [y]))
    lines = [1 + int(np.sum(np.diff(rows) > 3)) for _, _, rows in extents]
    return sum(count // 2 for count in lines)


def non_white_share(image: Image.Image) -> float:
    return float(np.mean(np.asarray(image.convert("L")) < 200))


PANELS = {  # what a reader sees: one plot, or a grid of them
    "posterior.png": 1,
    "manifold.png": 1,
    "posterior_training.png": EPOCHS + 1,  # before training and after each epoch
    "prior_samples.png": 2,  # Bernoulli means and samples
    "reconstructions.png": 3,  # data, predictive mean, predictive sample
    "training_curves.png": 2,  # ELBO and KL
}


@pytest.fixture(
    scope="module", params=[(1, "gaussian"), (2, "gaussian"), (5, "gaussian"), (2, "iaf")]
)
def rendered(request, tmp_path_factory):
    latent_dim, posterior = request.param
    directory = tmp_path_factory.mktemp(f"latent{latent_dim}{posterior}")
    workspace = make_workspace(directory, latent_dim=latent_dim, epochs=EPOCHS, posterior=posterior)
    with chdir(workspace):
        figures.main()
    return latent_dim, posterior, workspace


def test_every_declared_figure_is_a_readable_image(rendered):
    _, _, workspace = rendered
    written = sorted(p.name for p in (workspace / "figures").iterdir())
    assert written == sorted(pictures.SIZES)
    for name in written:
        path = workspace / "figures" / name
        with Image.open(path) as image:
            assert image.format == ("GIF" if name.endswith(".gif") else "PNG")
            assert image.size == canvas.pixel_size(pictures.SIZES[name]), name
            assert 0.01 < non_white_share(image) < 0.9, f"{name} looks blank or flooded"
            if name.endswith(".gif"):
                assert image.n_frames == EPOCHS + 1
                image.seek(image.n_frames - 1)
                assert non_white_share(image) > 0.01
        if name in PANELS:
            assert panel_count(path) == PANELS[name], name


def test_figures_are_reproducible(rendered):
    _, _, workspace = rendered
    before = {p.name: p.read_bytes() for p in (workspace / "figures").iterdir()}
    with chdir(workspace):
        figures.main()
    assert {p.name: p.read_bytes() for p in (workspace / "figures").iterdir()} == before


def test_the_flow_posterior_means_are_said_to_be_monte_carlo(rendered):
    latent_dim, posterior, workspace = rendered
    networks = model_files.load_networks(workspace / "models")
    how = pictures.means_in_words(vae.mean_samples(networks))
    assert ("Monte Carlo" in how) == (posterior == "iaf")
    images = np.load(workspace / "data/prepared/test_images.npy")[:5]
    means = vae.posterior_means(networks, images, seed=0)
    assert means.shape == (5, latent_dim) and np.all(np.isfinite(means))


def test_projection_is_said_on_the_figure(rendered):
    latent_dim, _, workspace = rendered
    means = np.random.default_rng(0).standard_normal((50, latent_dim)).astype(np.float32)
    view = LatentView.fit(means)
    assert ("PCA projection" in view.note()) == (latent_dim > 2)
    labels = view.axis_labels()
    assert labels == {1: ("z1", "digit (jittered)"), 2: ("z1", "z2")}.get(latent_dim, labels)
    if latent_dim > 2:
        assert labels[0].startswith("principal direction 1")
        np.testing.assert_allclose(view.directions.T @ view.directions, np.eye(2), atol=1e-6)


def test_manifold_decodes_exactly_the_grid_it_claims(rendered):
    latent_dim, _, workspace = rendered
    networks = model_files.load_networks(workspace / "models")
    means = np.random.default_rng(0).standard_normal((50, latent_dim)).astype(np.float32)
    view = LatentView.fit(means)
    fig, decoded, points = pictures.manifold_figure(networks.generative_network, 6, view)
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
    logits = networks.generative_network(points.reshape(-1, latent_dim).astype(np.float32))
    np.testing.assert_allclose(decoded.reshape(len(logits), -1), tf.sigmoid(logits), rtol=1e-6)


def test_snapshot_frames_keep_first_and_last():
    assert canvas.snapshot_frames(5, 8) == [0, 1, 2, 3, 4]
    frames = canvas.snapshot_frames(101, 8)
    assert len(frames) == 8 and frames[0] == 0 and frames[-1] == 100 and frames[:3] == [0, 1, 2]
