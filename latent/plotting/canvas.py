"""What every figure shares: sizes in inches at DPI, deterministic PNG output, digits drawn as
grey pixels and in tiles, the digit colours and their legend, axis limits, snapshot frames."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from latent.data.datasets import SIDE  # noqa: E402

DPI = 100
DIGIT_COLOURS = plt.get_cmap("tab10")


def new_figure(size: tuple[float, float], **kwargs):
    """A figure of ``size`` inches at DPI: the PNG is size * DPI pixels."""
    return plt.figure(figsize=size, dpi=DPI, **kwargs)


def pixel_size(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * DPI), round(size[1] * DPI)


def save_png(fig, path: Path) -> None:
    """The figure as a PNG with no software or date metadata (the same figure, the same bytes)."""
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)


def render_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def tile(images: np.ndarray) -> np.ndarray:
    """(rows, cols, 28, 28) -> one (rows * 28, cols * 28) image."""
    rows, cols = images.shape[:2]
    return images.transpose(0, 2, 1, 3).reshape(rows * SIDE, cols * SIDE)


def show_digits(ax, pixels: np.ndarray, interpolation: str | None = "nearest", **options):
    """Pixels in [0, 1] (probabilities or bits) as grey levels, 0 white and 1 black."""
    return ax.imshow(pixels, cmap="gray_r", vmin=0, vmax=1, interpolation=interpolation, **options)


def without_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


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
