"""Stage figures: the posterior and prior-predictive pictures of the seed post, for any latent size.

Params: ``manifold_grid`` and ``seed``. Reads models/ (networks and posterior snapshots),
the prepared test split and the dvclive curves. Writes figures/:
  posterior.png             means of q(z|x) of the test digits, coloured by digit
  posterior_training.gif    the same for a fixed subset, before training and after every epoch
  posterior_training.png    small multiples of those snapshots
  manifold.png              prior predictive: Bernoulli means decoded from a grid over [-3, 3]^2
  reconstructions.png       test digits, their posterior-predictive means and a sample
  prior_samples.png         decoded z ~ N(0, I): Bernoulli means and samples
  training_curves.png       train and valid ELBO and KL per epoch
latent_dim 2 plots z1, z2 themselves. More dimensions are shown along the two leading principal
directions of the posterior means (PCA, said so on every figure); latent_dim 1 plots z1 against
the digit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from stages import params, vae  # noqa: E402
from stages.atomic import StagedOutputs  # noqa: E402
from stages.datasets import load_split  # noqa: E402
from stages.runtime import StageError, log, run_stage  # noqa: E402

PARAMS = ["manifold_grid", "seed"]
MODELS = Path("models")
LIVE_METRICS = Path("dvclive/plots/metrics")
OUTPUT = Path("figures")
SNAPSHOTS = "posterior_snapshots.npz"
GRID_LIMIT = 3.0
DPI = 100
# figure sizes in inches; the PNGs are these times DPI pixels
SIZES = {
    "posterior.png": (7.0, 6.0),
    "posterior_training.png": (12.0, 6.6),
    "posterior_training.gif": (6.0, 5.4),
    "manifold.png": (8.0, 8.4),
    "reconstructions.png": (10.0, 3.6),
    "prior_samples.png": (10.0, 5.4),
    "training_curves.png": (10.0, 4.0),
}
DIGIT_COLOURS = plt.get_cmap("tab10")
MAX_GIF_FRAMES = 40
PANELS = 8


def pixel_size(name: str) -> tuple[int, int]:
    width, height = SIZES[name]
    return round(width * DPI), round(height * DPI)


def new_figure(name: str, **kwargs):
    return plt.figure(figsize=SIZES[name], dpi=DPI, **kwargs)


# --- latent coordinates shown in 2-D --------------------------------------------------------


@dataclass(frozen=True)
class LatentView:
    """How latent vectors become the two plotted coordinates."""

    latent_dim: int
    directions: np.ndarray | None  # (L, 2) orthonormal principal directions when L > 2
    explained: tuple[float, float] | None  # their shares of the posterior means' variance

    @classmethod
    def fit(cls, posterior_means: np.ndarray) -> LatentView:
        latent_dim = posterior_means.shape[1]
        if latent_dim <= 2:
            return cls(latent_dim, None, None)
        centred = posterior_means - posterior_means.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        directions = vt[:2].T
        directions *= np.where(directions.sum(axis=0) < 0, -1.0, 1.0)  # a deterministic sign
        shares = singular**2 / np.sum(singular**2)
        return cls(latent_dim, directions, (float(shares[0]), float(shares[1])))

    def coordinates(self, z: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """(N, 2) plot coordinates: z itself, its projection, or (z1, digit + jitter)."""
        if self.latent_dim == 1:
            return np.stack([z[:, 0], labels + rng.uniform(-0.3, 0.3, len(z))], axis=1)
        if self.latent_dim == 2:
            return z
        return z @ self.directions

    def axis_labels(self) -> tuple[str, str]:
        if self.latent_dim == 1:
            return "z1", "digit (jittered)"
        if self.latent_dim == 2:
            return "z1", "z2"
        return (
            f"principal direction 1 ({self.explained[0]:.0%} of variance)",
            f"principal direction 2 ({self.explained[1]:.0%} of variance)",
        )

    def note(self) -> str:
        if self.latent_dim <= 2:
            return ""
        return f"PCA projection of the {self.latent_dim}-D posterior means"


def scatter_digits(ax, xy: np.ndarray, labels: np.ndarray, size: float = 3.0):
    for digit in range(10):
        chosen = labels == digit
        ax.scatter(
            xy[chosen, 0],
            xy[chosen, 1],
            s=size,
            color=DIGIT_COLOURS(digit),
            alpha=0.6,
            linewidths=0,
            label=str(digit),
            rasterized=True,
        )


def digit_legend(ax, fig=None):
    """A legend of the digit colours right of ``ax`` (or, with ``fig``, right of the figure)."""
    if fig is None:
        legend = ax.legend(
            title="digit", markerscale=4, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
        )
    else:
        legend = fig.legend(
            *ax.get_legend_handles_labels(),
            title="digit",
            markerscale=4,
            loc="outside right upper",
            frameon=False,
        )
    for handle in legend.legend_handles:
        handle.set_alpha(1)


def shared_limits(xy: np.ndarray, margin: float = 0.05):
    """Axis limits holding 99.8% of the points, so a few outliers do not squash the plot."""
    low, high = np.percentile(xy, [0.1, 99.9], axis=0)
    pad = (high - low) * margin
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


# --- the figures ----------------------------------------------------------------------------


def posterior_figure(means, labels, view: LatentView, rng, title_epoch: str = ""):
    fig = new_figure("posterior.png", layout="constrained")
    ax = fig.add_subplot()
    scatter_digits(ax, view.coordinates(means, labels, rng), labels)
    x_label, y_label = view.axis_labels()
    ax.set(xlabel=x_label, ylabel=y_label)
    title = f"Approximate posterior: means of q(z|x) of {len(means)} test digits{title_epoch}"
    ax.set_title(title + (f"\n{view.note()}" if view.note() else ""), fontsize=10)
    digit_legend(ax)
    return fig


def snapshot_frames(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` of ``count`` snapshots, always the first and the last, spaced
    geometrically: the posterior changes most in the first epochs."""
    if count <= limit:
        return list(range(count))
    chosen = best = {0, count - 1}
    for size in range(limit, 4 * limit):
        steps = np.unique(np.geomspace(1, count - 1, size - 1).round().astype(int))
        if len(chosen | set(steps.tolist())) > limit:
            break
        best = chosen | set(steps.tolist())
    return sorted(best)


def training_snapshot_axes(ax, xy, labels, limits, epoch, view, small=False):
    scatter_digits(ax, xy, labels, size=1.5 if small else 3.0)
    ax.set_xlim(limits[0])
    ax.set_ylim(limits[1])
    ax.set_title("before training" if epoch == 0 else f"after epoch {epoch}", fontsize=9)
    if not small:
        x_label, y_label = view.axis_labels()
        ax.set(xlabel=x_label, ylabel=y_label)


def posterior_training(snapshots, view: LatentView, rng):
    """(small-multiples figure, GIF bytes) of the posterior means during training."""
    epochs, labels = snapshots["epochs"], snapshots["labels"]
    jitter_rng = np.random.default_rng(rng.integers(2**32))
    coordinates = [
        view.coordinates(m, labels, np.random.default_rng(jitter_rng.integers(2**32)))
        for m in snapshots["posterior_means"]
    ]
    limits = shared_limits(np.concatenate(coordinates))
    note = f" ({view.note()})" if view.note() else ""
    x_label, y_label = view.axis_labels()

    fig = new_figure("posterior_training.png", layout="constrained")
    panels = snapshot_frames(len(epochs), PANELS)
    axes = fig.subplots(2, PANELS // 2, sharex=True, sharey=True).ravel()
    for ax, index in zip(axes, panels):
        training_snapshot_axes(
            ax, coordinates[index], labels, limits, int(epochs[index]), view, True
        )
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.supxlabel(x_label, fontsize=9)
    fig.supylabel(y_label, fontsize=9)
    fig.suptitle(
        f"Approximate posterior during training: means of q(z|x) of {len(labels)} "
        f"test digits{note}",
        fontsize=11,
    )
    digit_legend(axes[0], fig)

    frames = []
    for index in snapshot_frames(len(epochs), MAX_GIF_FRAMES):
        frame = new_figure("posterior_training.gif", layout="constrained")
        ax = frame.add_subplot()
        training_snapshot_axes(ax, coordinates[index], labels, limits, int(epochs[index]), view)
        ax.set_title(f"q(z|x) means, {ax.get_title()}{note}", fontsize=10)
        digit_legend(ax)
        frames.append(render_rgb(frame))
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
    return fig, gif.getvalue()


def render_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def bernoulli_means(generative_network, z: np.ndarray) -> np.ndarray:
    """E[x|z] = sigmoid(logits): (N, 28, 28) pixel probabilities."""
    logits = generative_network(tf.constant(z, tf.float32))
    return tf.sigmoid(logits).numpy().reshape(-1, 28, 28)


def manifold_points(grid: int, view: LatentView) -> tuple[np.ndarray, np.ndarray]:
    """The grid values (n,) over [-3, 3] and the latent points (n, n, L) they decode from.

    Row i, column j is (a_j, b_{n-1-i}): left to right the first coordinate grows, bottom to top
    the second one grows, as on the axes of a plot. L = 2: z = (a, b). L > 2: z = a u1 + b u2
    along the two leading principal directions, all other coordinates at the prior mean 0.
    L = 1: a single row, z = a.
    """
    values = np.linspace(-GRID_LIMIT, GRID_LIMIT, grid)
    if view.latent_dim == 1:
        return values, values.reshape(1, grid, 1)
    a, b = np.meshgrid(values, values[::-1])
    ab = np.stack([a, b], axis=-1)
    if view.latent_dim == 2:
        return values, ab
    return values, ab @ view.directions.T


def tile(images: np.ndarray) -> np.ndarray:
    """(rows, cols, 28, 28) -> one (rows * 28, cols * 28) image."""
    rows, cols = images.shape[:2]
    return images.transpose(0, 2, 1, 3).reshape(rows * 28, cols * 28)


def manifold_figure(generative_network, grid: int, view: LatentView):
    """(figure, decoded means (rows * cols, 28, 28), latent points (rows, cols, L))."""
    values, points = manifold_points(grid, view)
    rows, cols = points.shape[:2]
    means = bernoulli_means(generative_network, points.reshape(rows * cols, -1))
    fig = new_figure("manifold.png", layout="constrained")
    ax = fig.add_subplot()
    image = tile(means.reshape(rows, cols, 28, 28))
    where = {1: "z1 from -3 to 3", 2: "z1 and z2 from -3 to 3 (tile centres)"}.get(
        view.latent_dim,
        "-3 to 3 along the two leading principal directions of the posterior means;\n"
        f"the other {view.latent_dim - 2} coordinates at the prior mean 0",
    )
    ax.set_title(
        f"Prior predictive: Bernoulli means E[x|z] decoded on a {rows} x {cols} grid,\n{where}",
        fontsize=10,
    )
    if rows > 1:
        # each tile is centred on its grid value: the image spans half a step beyond -3 and 3
        edge = GRID_LIMIT + (values[1] - values[0]) / 2
        ax.imshow(
            image,
            cmap="gray_r",
            vmin=0,
            vmax=1,
            extent=(-edge, edge, -edge, edge),
            interpolation="nearest",
        )
        x_label, y_label = view.axis_labels()
        ax.set(xlabel=x_label, ylabel=y_label)
    else:
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks(np.arange(cols) * 28 + 13.5, [f"{v:.1f}" for v in values], fontsize=7)
        ax.set_xlabel("z1")
    return fig, means, points


def reconstructions_figure(inference_network, generative_network, images, labels, rng):
    """One test digit of each class: data, posterior-predictive mean and a sample of it."""
    chosen = np.array(
        [rng.choice(np.flatnonzero(labels == d)) for d in range(10) if np.any(labels == d)]
    )
    x = images[chosen].astype(np.float32)
    loc, scale = (t.numpy() for t in inference_network(tf.constant(x)))
    eps = rng.standard_normal((16, *loc.shape)).astype(np.float32)
    z = loc + scale * eps  # 16 draws of z ~ q(z|x) for each digit
    means = bernoulli_means(generative_network, z.reshape(-1, loc.shape[1])).reshape(
        16, len(x), 28, 28
    )
    predictive_mean = means.mean(axis=0)
    predictive_sample = (rng.random(means[0].shape) < means[0]).astype(np.float32)
    rows = [
        ("data x", x.reshape(-1, 28, 28)),
        ("E[x|z], z ~ q(z|x)\n(mean of 16 z)", predictive_mean),
        ("x ~ p(x|z), z ~ q(z|x)\n(one sample)", predictive_sample),
    ]
    fig = new_figure("reconstructions.png", layout="constrained")
    axes = fig.subplots(len(rows), 1)
    for ax, (name, row) in zip(axes, rows):
        ax.imshow(tile(row[None]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Test digits and their posterior predictive", fontsize=11)
    return fig


def prior_samples_figure(generative_network, latent_dim, rng, count=8):
    z = rng.standard_normal((count * count, latent_dim)).astype(np.float32)
    means = bernoulli_means(generative_network, z)
    samples = (rng.random(means.shape) < means).astype(np.float32)
    fig = new_figure("prior_samples.png", layout="constrained")
    for ax, (name, images) in zip(
        fig.subplots(1, 2), (("Bernoulli means E[x|z]", means), ("samples x ~ p(x|z)", samples))
    ):
        ax.imshow(
            tile(images.reshape(count, count, 28, 28)),
            cmap="gray_r",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Prior predictive: {count * count} draws z ~ N(0, I) decoded by p(x|z)", fontsize=11
    )
    return fig


def read_curve(split: str, metric: str) -> pd.DataFrame:
    path = LIVE_METRICS / split / f"{metric}.tsv"
    try:
        return pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise StageError(f"{path} not found: run the train stage first") from None


def training_curves_figure():
    """Train and valid ELBO and KL per epoch, with the epoch whose weights were kept (the best
    valid objective: the ELBO, or the IWAE bound when training with train_samples > 1)."""
    objective = "iwae" if (LIVE_METRICS / "valid" / "iwae.tsv").exists() else "elbo"
    valid = read_curve("valid", objective)
    best = int(valid["step"][valid[objective].idxmax()])
    fig = new_figure("training_curves.png", layout="constrained")
    for ax, metric, title in zip(
        fig.subplots(1, 2),
        ("elbo", "kl"),
        ("ELBO (nats per example)", "KL(q(z|x) || p(z)) (nats per example)"),
    ):
        for split, style in (("train", "-"), ("valid", "--")):
            curve = read_curve(split, metric)
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


# --- the stage ------------------------------------------------------------------------------


def save_png(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)


def load_snapshots(directory: Path = MODELS) -> dict[str, np.ndarray]:
    path = directory / SNAPSHOTS
    if not path.exists():
        raise StageError(f"{path} not found: run the train stage first")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def render_all(p: dict, inference_network, generative_network, test, snapshots, directory: Path):
    """Write every figure into ``directory``."""
    rng = np.random.default_rng(p["seed"])
    latent_dim = vae.latent_dim_of(generative_network)
    test_x = tf.constant(test.images.astype(np.float32))
    means = inference_network(test_x)[0].numpy()
    view = LatentView.fit(means)
    log(
        f"latent_dim {latent_dim}: " + (view.note() or "plotting the latent coordinates themselves")
    )

    save_png(posterior_figure(means, test.labels, view, rng), directory / "posterior.png")
    small_multiples, gif = posterior_training(snapshots, view, rng)
    save_png(small_multiples, directory / "posterior_training.png")
    (directory / "posterior_training.gif").write_bytes(gif)
    save_png(
        manifold_figure(generative_network, p["manifold_grid"], view)[0], directory / "manifold.png"
    )
    save_png(
        reconstructions_figure(
            inference_network, generative_network, test.images, test.labels, rng
        ),
        directory / "reconstructions.png",
    )
    save_png(
        prior_samples_figure(generative_network, latent_dim, rng), directory / "prior_samples.png"
    )
    save_png(training_curves_figure(), directory / "training_curves.png")


def main() -> None:
    p = params.load(PARAMS)
    inference_network, generative_network = vae.load_networks(MODELS)
    snapshots = load_snapshots()
    test = load_split("test")
    with StagedOutputs() as out:
        directory = out.directory(OUTPUT)
        render_all(p, inference_network, generative_network, test, snapshots, directory)
    log(f"wrote {OUTPUT}/: " + ", ".join(sorted(SIZES)))


if __name__ == "__main__":
    run_stage(main)
