"""The inference gap's figures: the two gaps by digit, and for a 2-D latent the exact posterior
p(z|x) on a grid with the contours of the amortized q(z|x) and the refined q*(z|x)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from latent.data.datasets import SIDE
from latent.estimators.gaps import Gaps
from latent.estimators.quadrature import GridPosterior
from latent.estimators.refinement import RefinedPosterior
from latent.model import vae
from latent.plotting.canvas import DIGIT_COLOURS, new_figure, show_digits, without_ticks

GAP_SIZE = (9.0, 4.5)  # inches
POSTERIOR_SIZE = (13.0, 8.4)
CONTOUR_POINTS = 240  # per axis of the plane the q's densities are evaluated on
SIGMAS = np.array([2.0, 1.0])  # contours at exp(-sigma^2 / 2) of the peak: "2 and 1 sigma"


def gap_figure(per_digit: pd.DataFrame, how: str):
    """Per digit, the approximation and amortization gaps as stacked bars."""
    fig = new_figure(GAP_SIZE, layout="constrained")
    ax = fig.add_subplot()
    digits = per_digit["digit"].to_numpy()
    approximation = per_digit["approximation_gap"].to_numpy()
    amortization = per_digit["amortization_gap"].to_numpy()
    ax.bar(
        digits,
        approximation,
        color=DIGIT_COLOURS(0),
        label="approximation gap: log p(x) - ELBO[q*]",
    )
    ax.bar(
        digits,
        amortization,
        bottom=approximation,
        color=DIGIT_COLOURS(1),
        label="amortization gap: ELBO[q*] - ELBO[q]",
    )
    ax.set_xticks(digits)
    ax.set(xlabel="digit", ylabel="nats per example (mean over the test images)")
    ax.set_title(f"What the ELBO leaves on the table, by digit ({how})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def exact_density(ax, grid: GridPosterior):
    """p(z|x) in grey, at most mid-grey so that the contours stay readable over it."""
    extent = (grid.a[0], grid.a[-1], grid.b[0], grid.b[-1])
    density = np.exp(grid.log_density)
    ax.imshow(
        density,
        origin="lower",
        extent=extent,
        aspect="auto",
        cmap="Greys",
        vmin=0,
        vmax=2 * density.max(),
        interpolation="nearest",
    )
    return extent


def view_box(extent, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners holding the grid's extent and every (low, high) box."""
    boxes = [(np.array(extent[::2]), np.array(extent[1::2])), *boxes]
    return np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)


def density_contours(ax, q, low, high, colour, style, name) -> None:
    """q's density at 1 and 2 "sigma" of its peak over the box from low to high."""
    a, b = np.meshgrid(*(np.linspace(lo, hi, CONTOUR_POINTS) for lo, hi in zip(low, high)))
    points = tf.constant(np.stack([a.ravel(), b.ravel()], 1)[:, None, :], tf.float32)
    density = np.exp(np.asarray(q.log_prob(points)).reshape(a.shape))
    levels = density.max() * np.exp(-0.5 * SIGMAS**2)
    ax.contour(a, b, density, levels=levels, colors=colour, linestyles=style, linewidths=1.2)
    ax.plot([], [], color=colour, linestyle=style, label=name)


def digit_inset(ax, image) -> None:
    inset = ax.inset_axes([0.02, 0.70, 0.28, 0.28])
    show_digits(inset, image.reshape(SIDE, SIDE), interpolation=None)
    without_ticks(inset)


def posterior_panel(ax, networks, refined, image, index, grid, title) -> None:
    """One image: p(z|x) on its grid, both q's contours and the digit itself."""
    extent = exact_density(ax, grid)
    outputs = networks.inference_network(tf.constant(image[None], tf.float32))
    amortized = vae.posterior_from_parameters(*outputs, flow=networks.flow)
    loc, scale = (np.asarray(t)[0] for t in outputs[:2])  # its base Gaussian's
    low, high = view_box(extent, [refined.box(index, 3.0), (loc - 3 * scale, loc + 3 * scale)])
    density_contours(ax, amortized, low, high, "tab:orange", "-", "amortized q(z|x)")
    density_contours(ax, refined.q([index]), low, high, "tab:blue", "--", "refined q*(z|x)")
    digit_inset(ax, image)
    ax.set_title(title, fontsize=9)
    ax.set(xlabel="z1", ylabel="z2", xlim=(low[0], high[0]), ylim=(low[1], high[1]))


def true_posterior_figure(networks, refined: RefinedPosterior, images, gaps: Gaps, grids, chosen):
    """Six images in three columns (``chosen``'s kinds: easy, ambiguous, reconstructed worst)."""
    fig = new_figure(POSTERIOR_SIZE, layout="constrained")
    axes = fig.subplots(2, 3).T.ravel()
    for ax, (kind, index) in zip(axes, [(k, i) for k, ids in chosen.items() for i in ids]):
        title = (
            f"{kind}: digit {int(gaps.labels[index])}\nlog p(x) {grids[index].log_px:.1f}, "
            f"ELBO[q*] {gaps.elbo_refined[index]:.1f}, ELBO[q] {gaps.elbo_amortized[index]:.1f}"
        )
        posterior_panel(ax, networks, refined, images[index], index, grids[index], title)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "Exact posterior p(z|x) on a grid (grey; normalizer by quadrature) with contours of the "
        "amortized q(z|x) and the refined q*(z|x) (density at exp(-1/2) and exp(-2) of its peak)",
        fontsize=10,
    )
    return fig


def no_true_posterior_figure(latent_dim: int):
    fig = new_figure(POSTERIOR_SIZE)
    fig.text(
        0.5,
        0.5,
        f"The exact posterior is drawn on a grid for latent_dim 2 only "
        f"(this model has latent_dim {latent_dim}).\nThe gaps in inference_gap.png are "
        "measured for any latent size.",
        ha="center",
        va="center",
        fontsize=14,
    )
    return fig
