"""The seed post's pictures, for any latent size: the approximate posterior of the test digits
(also during training) and the prior predictive, with reconstructions and the training curves.

  posterior.png             means of q(z|x) of the test digits, coloured by digit
  posterior_training.gif    the same for a fixed subset, before training and after every epoch
  posterior_training.png    small multiples of those snapshots
  manifold.png              prior predictive: Bernoulli means decoded from a grid over [-3, 3]^2
  reconstructions.png       test digits, their posterior-predictive means and a sample
  prior_samples.png         decoded z ~ p(z): Bernoulli means and samples (and the VampPrior's
                            pseudo-inputs with what their components decode to)
  training_curves.png       train and valid ELBO and KL per epoch
The pictures' draws are the model's own distributions' (``q.sample``, ``prior(networks).sample``,
p(x|z)'s ``mean``/``sample``), from stateless keys of the seed (``streams``); the posterior means
are ``vae.posterior_means``, like the training snapshots'. latent_dim 2 plots z1, z2 themselves.
More dimensions are shown along the two leading principal directions of the posterior means
(PCA, said so on every figure); latent_dim 1 plots z1 against the digit. With a flow posterior
the "means of q(z|x)" are Monte Carlo means of flow samples, said so on the figures.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from latent.data.datasets import PIXELS, SIDE
from latent.model import vae
from latent.plotting.canvas import (
    digit_legend,
    new_figure,
    render_rgb,
    save_png,
    scatter_digits,
    shared_limits,
    show_digits,
    snapshot_frames,
    tile,
    without_ticks,
)
from latent.plotting.latent_view import LatentView
from latent.plumbing import streams
from latent.plumbing.runtime import log
from latent.records import history

GRID_LIMIT = 3.0
# figure sizes in inches; the PNGs are these times plotting.DPI pixels
SIZES = {
    "posterior.png": (7.0, 6.0),
    "posterior_training.png": (12.0, 6.6),
    "posterior_training.gif": (6.0, 5.4),
    "manifold.png": (8.0, 8.4),
    "reconstructions.png": (10.0, 3.6),
    "prior_samples.png": (10.0, 5.4),
    "training_curves.png": (10.0, 4.0),
}
MAX_GIF_FRAMES = 40
PANELS = 8
RECONSTRUCTION_SAMPLES = 16
# the figures' draws, each its own counter of the "figures" stream of the seed
DRAWS = {
    "posterior samples": 1,
    "posterior predictive pixels": 2,
    "prior samples": 3,
    "prior predictive pixels": 4,
}


def tfp_seed(seed: int, draw: str):
    return streams.tfp_seed("figures", seed, DRAWS[draw])


def means_in_words(mean_samples: int) -> str:
    """How the posterior means were computed (``vae.mean_samples``), for the figures' titles."""
    if not mean_samples:
        return "means of q(z|x)"
    return f"means of q(z|x) (Monte Carlo, {mean_samples} samples of the flow)"


def posterior_figure(means, labels, view: LatentView, rng, how: str):
    fig = new_figure(SIZES["posterior.png"], layout="constrained")
    ax = fig.add_subplot()
    scatter_digits(ax, view.coordinates(means, labels, rng), labels)
    x_label, y_label = view.axis_labels()
    ax.set(xlabel=x_label, ylabel=y_label)
    title = f"Approximate posterior: {how} of {len(means)} test digits"
    ax.set_title(title + (f"\n{view.note()}" if view.note() else ""), fontsize=10)
    digit_legend(ax)
    return fig


@dataclass
class SnapshotView:
    """The training snapshots as plotted: 2-D coordinates of every snapshot on shared limits."""

    epochs: np.ndarray
    labels: np.ndarray
    coordinates: list[np.ndarray]
    limits: tuple
    view: LatentView
    how: str

    @classmethod
    def of(cls, snapshots: dict, view: LatentView, rng) -> SnapshotView:
        labels = snapshots["labels"]
        jitter_rng = np.random.default_rng(rng.integers(2**32))
        coordinates = [
            view.coordinates(m, labels, np.random.default_rng(jitter_rng.integers(2**32)))
            for m in snapshots["posterior_means"]
        ]
        limits = shared_limits(np.concatenate(coordinates))
        how = means_in_words(snapshots["mean_samples"])
        return cls(snapshots["epochs"], labels, coordinates, limits, view, how)

    @property
    def note(self) -> str:
        return f" ({self.view.note()})" if self.view.note() else ""

    def draw(self, ax, index: int, small: bool = False) -> None:
        epoch = int(self.epochs[index])
        scatter_digits(ax, self.coordinates[index], self.labels, size=1.5 if small else 3.0)
        ax.set_xlim(self.limits[0])
        ax.set_ylim(self.limits[1])
        ax.set_title("before training" if epoch == 0 else f"after epoch {epoch}", fontsize=9)
        if not small:
            x_label, y_label = self.view.axis_labels()
            ax.set(xlabel=x_label, ylabel=y_label)


def snapshots_figure(shown: SnapshotView):
    """Small multiples: PANELS snapshots from before training to the last epoch."""
    fig = new_figure(SIZES["posterior_training.png"], layout="constrained")
    panels = snapshot_frames(len(shown.epochs), PANELS)
    axes = fig.subplots(2, PANELS // 2, sharex=True, sharey=True).ravel()
    for ax, index in zip(axes, panels):
        shown.draw(ax, index, small=True)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    x_label, y_label = shown.view.axis_labels()
    fig.supxlabel(x_label, fontsize=9)
    fig.supylabel(y_label, fontsize=9)
    fig.suptitle(
        f"Approximate posterior during training: {shown.how} of {len(shown.labels)} "
        f"test digits{shown.note}",
        fontsize=11,
    )
    digit_legend(axes[0], fig)
    return fig


def snapshots_animation(shown: SnapshotView) -> bytes:
    """A GIF of at most MAX_GIF_FRAMES snapshots, lingering on the first and the last."""
    frames = []
    for index in snapshot_frames(len(shown.epochs), MAX_GIF_FRAMES):
        frame = new_figure(SIZES["posterior_training.gif"], layout="constrained")
        ax = frame.add_subplot()
        shown.draw(ax, index)
        ax.set_title(f"{shown.how},\n{ax.get_title()}{shown.note}", fontsize=10)
        digit_legend(ax)
        frames.append(render_rgb(frame))
    return gif_bytes(frames)


def gif_bytes(frames: list[np.ndarray]) -> bytes:
    """RGB frames as an animated GIF of 64 colours (PIL), with no optimization (stable bytes)."""
    gif = io.BytesIO()
    images = [
        Image.fromarray(f).quantize(colors=64, method=Image.Quantize.MEDIANCUT) for f in frames
    ]
    durations = [800] + [250] * (len(images) - 2) + [2000] if len(images) > 1 else [2000]
    images[0].save(
        gif,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
        optimize=False,
    )
    return gif.getvalue()


def manifold_points(grid: int, view: LatentView) -> tuple[np.ndarray, np.ndarray]:
    """The grid values (n,) over [-3, 3] and the latent points (n, n, L) they decode from.

    Row i, column j is (a_j, b_{n-1-i}): left to right the first coordinate grows, bottom to top
    the second one grows, as on the axes of a plot. L = 2: z = (a, b). L > 2: z = a u1 + b u2
    along the two leading principal directions, all other coordinates at 0 (the mean of N(0, I);
    a VampPrior's mean is the mean of its components' locs). L = 1: a single row, z = a.
    """
    values = np.linspace(-GRID_LIMIT, GRID_LIMIT, grid)
    if view.latent_dim == 1:
        return values, values.reshape(1, grid, 1)
    a, b = np.meshgrid(values, values[::-1])
    ab = np.stack([a, b], axis=-1)
    if view.latent_dim == 2:
        return values, ab
    return values, ab @ view.directions.T


def bernoulli_means(generative_network, z) -> np.ndarray:
    """E[x|z] of p(x|z) as (N, 784) pixel probabilities, z (N, L)."""
    return np.asarray(vae.likelihood(generative_network, tf.constant(z, tf.float32)).mean())


def manifold_figure(generative_network, grid: int, view: LatentView, held_at="the prior mean 0"):
    """(figure, decoded means (rows * cols, 784), latent points (rows, cols, L)); the title says
    the other coordinates are ``held_at``."""
    values, points = manifold_points(grid, view)
    rows, cols = points.shape[:2]
    means = bernoulli_means(generative_network, points.reshape(rows * cols, -1))
    fig = new_figure(SIZES["manifold.png"], layout="constrained")
    ax = fig.add_subplot()
    image = tile(means.reshape(rows, cols, SIDE, SIDE))
    where = {1: "z1 from -3 to 3", 2: "z1 and z2 from -3 to 3 (tile centres)"}.get(
        view.latent_dim,
        "-3 to 3 along the two leading principal directions of the posterior means;\n"
        f"the other {view.latent_dim - 2} coordinates at {held_at}",
    )
    ax.set_title(
        f"Prior predictive: Bernoulli means E[x|z] decoded on a {rows} x {cols} grid,\n{where}",
        fontsize=10,
    )
    if rows > 1:
        # each tile is centred on its grid value: the image spans half a step beyond -3 and 3
        edge = GRID_LIMIT + (values[1] - values[0]) / 2
        show_digits(ax, image, extent=(-edge, edge, -edge, edge))
        x_label, y_label = view.axis_labels()
        ax.set(xlabel=x_label, ylabel=y_label)
    else:
        show_digits(ax, image)
        ax.set_yticks([])
        ticks = np.arange(cols) * SIDE + (SIDE - 1) / 2
        ax.set_xticks(ticks, [f"{v:.1f}" for v in values], fontsize=7)
        ax.set_xlabel("z1")
    return fig, means, points


def reconstructions_figure(networks: vae.Networks, images, labels, seed: int):
    """One test digit of each class: data, posterior-predictive mean and a sample of it."""
    rng = np.random.default_rng(seed)
    chosen = np.array(
        [rng.choice(np.flatnonzero(labels == d)) for d in range(10) if np.any(labels == d)]
    )
    x = tf.constant(images[chosen], tf.float32)
    q = vae.approximate_posterior(networks, x)
    z = q.sample(RECONSTRUCTION_SAMPLES, seed=tfp_seed(seed, "posterior samples"))  # (16, N, L)
    p_x_given_z = vae.likelihood(networks.generative_network, z)
    predictive_mean = np.asarray(tf.reduce_mean(p_x_given_z.mean(), axis=0))
    pixels = p_x_given_z.sample(seed=tfp_seed(seed, "posterior predictive pixels"))
    predictive_sample = np.asarray(pixels[0])
    rows = [
        ("data x", np.asarray(x)),
        (f"E[x|z], z ~ q(z|x)\n(mean of {RECONSTRUCTION_SAMPLES} z)", predictive_mean),
        ("x ~ p(x|z), z ~ q(z|x)\n(one sample)", predictive_sample),
    ]
    fig = new_figure(SIZES["reconstructions.png"], layout="constrained")
    axes = fig.subplots(len(rows), 1)
    for ax, (name, row) in zip(axes, rows):
        show_digits(ax, tile(row.reshape(1, -1, SIDE, SIDE)))
        without_ticks(ax)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Test digits and their posterior predictive", fontsize=11)
    return fig


def pseudo_input_panels(networks: vae.Networks, count: int) -> list[tuple[str, np.ndarray]]:
    """The VampPrior's first count^2 pseudo-inputs u_k and the Bernoulli means decoded at the
    means of their components, loc(u_k), as (title, (count^2, 784)) panels (blank past K)."""
    pseudo_inputs = np.asarray(networks.pseudo_inputs())[: count * count]
    loc = networks.inference_network(pseudo_inputs)[0]
    decoded = bernoulli_means(networks.generative_network, loc)
    shown = len(pseudo_inputs)
    panels = []
    for title, images in (
        (f"pseudo-inputs u_k ({shown} of {networks.pseudo_inputs.components})", pseudo_inputs),
        ("E[x|z] at z = loc(u_k), each component's mean", decoded),
    ):
        padded = np.zeros((count * count, PIXELS), np.float32)
        padded[:shown] = images
        panels.append((title, padded))
    return panels


def prior_samples_figure(networks: vae.Networks, seed: int, count=8):
    """Decoded draws of the prior; for the VampPrior also its pseudo-inputs and what their
    components decode to."""
    z = vae.prior(networks).sample(count * count, seed=tfp_seed(seed, "prior samples"))
    p_x_given_z = vae.likelihood(networks.generative_network, z)
    means = np.asarray(p_x_given_z.mean())
    samples = np.asarray(p_x_given_z.sample(seed=tfp_seed(seed, "prior predictive pixels")))
    panels = [("Bernoulli means E[x|z]", means), ("samples x ~ p(x|z)", samples)]
    size = SIZES["prior_samples.png"]
    if not networks.has_standard_prior:
        panels += pseudo_input_panels(networks, count)
        size = (size[0], 2 * size[1])
    fig = new_figure(size, layout="constrained")
    for ax, (name, images) in zip(fig.subplots(len(panels) // 2, 2).ravel(), panels):
        show_digits(ax, tile(images.reshape(count, count, SIDE, SIDE)))
        ax.set_title(name, fontsize=10)
        without_ticks(ax)
    prior = "N(0, I)" if networks.has_standard_prior else "p(z), the VampPrior,"
    fig.suptitle(
        f"Prior predictive: {count * count} draws z ~ {prior} decoded by p(x|z)", fontsize=11
    )
    return fig


def training_curves_figure():
    """Train and valid ELBO and KL per epoch, with the epoch whose weights were kept (the best
    valid objective: the ELBO, or the IWAE bound when training with train_samples > 1)."""
    objective = history.read_objective()
    valid = history.read_curve("valid", objective)
    best = int(valid["step"][valid[objective].idxmax()])
    fig = new_figure(SIZES["training_curves.png"], layout="constrained")
    for ax, metric, title in zip(
        fig.subplots(1, 2),
        ("elbo", "kl"),
        ("ELBO (nats per example)", "KL(q(z|x) || p(z)) (nats per example)"),
    ):
        for split, style in (("train", "-"), ("valid", "--")):
            curve = history.read_curve(split, metric)
            ax.plot(curve["step"], curve[metric], style, label=split)
        ax.axvline(
            best,
            color="grey",
            linestyle=":",
            label=f"best valid {objective.upper()} (epoch {best})",
        )
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def draw_all(networks: vae.Networks, test, snapshots: dict, directory: Path, seed, grid: int):
    """Write every figure into ``directory``: the model's, the test split's and the training
    snapshots' (and the curves in dvclive/), with the draws of ``seed`` and a ``grid`` x ``grid``
    manifold."""
    rng = np.random.default_rng(seed)
    means = vae.posterior_means(networks, test.images, seed)
    how = means_in_words(vae.mean_samples(networks))
    view = LatentView.fit(means)
    note = view.note() or "plotting the latent coordinates themselves"
    log(f"latent_dim {networks.latent_dim}: {note}; posterior: {how}")

    save_png(posterior_figure(means, test.labels, view, rng, how), directory / "posterior.png")
    shown = SnapshotView.of(snapshots, view, rng)
    save_png(snapshots_figure(shown), directory / "posterior_training.png")
    (directory / "posterior_training.gif").write_bytes(snapshots_animation(shown))
    generative_network = networks.generative_network
    held_at = "the prior mean 0" if networks.has_standard_prior else "0"
    manifold = manifold_figure(generative_network, grid, view, held_at)[0]
    save_png(manifold, directory / "manifold.png")
    reconstructions = reconstructions_figure(networks, test.images, test.labels, seed)
    save_png(reconstructions, directory / "reconstructions.png")
    prior_samples = prior_samples_figure(networks, seed)
    save_png(prior_samples, directory / "prior_samples.png")
    save_png(training_curves_figure(), directory / "training_curves.png")
