"""Stage inference_gap: the post's "mean-field versus amortized inference", measured.

"If we see a new datapoint ... we can run variational inference again (maximizing the ELBO until
convergence), or trust that the shared parameters are good enough." For each of ``gap_examples``
test images this stage does both and measures what the choice costs (Cremer, Li & Duvenaud,
"Inference Suboptimality in Variational Autoencoders", 2018):

  q(z|x)   amortized: the inference network's output (the parameters shared by all datapoints)
  q*(z|x)  refined, per datapoint (the post's mean-field choice: no parameters shared between
           datapoints): the same family with free parameters for each image (loc, scale, and for
           the flow its context h; the flow's and the generative network's weights stay frozen),
           started at the encoder's output and moved by Adam for ``gap_steps`` steps (learning
           rate ``gap_learning_rate`` decaying to 0 on a cosine) to maximize the ELBO, all images
           in parallel as one batch of variational parameters, reparameterized one-sample
           gradients with fresh eps every step

and, with ``gap_samples`` importance samples each, ELBO[q], ELBO[q*] and log p(x) (the IS
estimate under whichever of q, q* has the higher ELBO for that image):

  approximation gap = log p(x) - ELBO[q*]   how far even the best q in the family is from p(z|x)
  amortization gap  = ELBO[q*] - ELBO[q]    what sharing the encoder's parameters costs
  total gap         = log p(x) - ELBO[q]

Params: gap_examples, gap_steps, gap_learning_rate, gap_samples, seed. Reads models/ and the
prepared test split. Writes
  metrics/inference_gap.json            the means over the images (nats per example), and for
                                         latent_dim 2 log p(x) by grid quadrature beside the IS
                                         estimate for QUADRATURE_EXAMPLES images
  metrics/inference_gap_per_digit.csv   the same by digit
  metrics/inference_gap_curve.csv       the mean ELBO of the refined q* during refinement
  figures/inference_gap.png             per digit, the two gaps as stacked bars
  figures/true_posterior.png            latent_dim 2: the exact posterior p(z|x) on a grid for 6
                                         test digits, with the contours of q and q* (other latent
                                         sizes: a note saying why there is no such picture)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages import devices, params, streams, vae
from stages.atomic import StagedOutputs
from stages.datasets import load_split, per_digit_means
from stages.importance_sampling import ImportanceSampler
from stages.plotting import DIGIT_COLOURS, new_figure, save_png
from stages.runtime import log, run_stage

PARAMS = ["gap_examples", "gap_steps", "gap_learning_rate", "gap_samples", "seed"]
MODELS = Path("models")
METRICS = Path("metrics/inference_gap.json")
PER_DIGIT = Path("metrics/inference_gap_per_digit.csv")
CURVE = Path("metrics/inference_gap_curve.csv")
GAP_FIGURE = Path("figures/inference_gap.png")
POSTERIOR_FIGURE = Path("figures/true_posterior.png")
SIZES = {GAP_FIGURE: (9.0, 4.5), POSTERIOR_FIGURE: (13.0, 8.4)}
STEPS_PER_CALL = 10  # refinement steps per compiled call; the curve has one point per call
QUADRATURE_EXAMPLES = 200  # latent_dim 2: log p(x) by quadrature for this many images
COARSE_GRID, FINE_GRID, GRID_LIMIT = 96, 192, 6.0


# --- the refined, per-datapoint q*(z|x) ------------------------------------------------------


class RefinedPosterior:
    """Free per-image parameters of q*(z|x), started at the inference network's output."""

    def __init__(self, networks: vae.Networks, images: np.ndarray):
        outputs = networks.inference(tf.constant(images, tf.float32))
        loc, scale = outputs[0], outputs[1]
        raw_scale = scale + tf.math.log(-tf.math.expm1(-scale))  # softplus^-1, stably
        self.networks = networks
        self.loc = keras.Variable(loc, name="loc")
        self.raw_scale = keras.Variable(raw_scale, name="raw_scale")
        self.variables = [self.loc, self.raw_scale]
        self.context = None
        if len(outputs) > 2:
            self.context = keras.Variable(outputs[2], name="context")
            self.variables.append(self.context)

    def q(self, rows=None):
        """q*(z|x) of all images, or of the images at ``rows``."""
        pick = (lambda v: v) if rows is None else (lambda v: tf.gather(v, rows))
        context = None if self.context is None else pick(self.context)
        scale = tf.math.softplus(pick(self.raw_scale))
        return vae.posterior_from_parameters(pick(self.loc), scale, context, self.networks.flow)


def refine(
    posterior: RefinedPosterior, images, steps: int, learning_rate: float, seed: int, report=log
) -> pd.DataFrame:
    """Adam on the per-image parameters for ``steps`` steps (the learning rate decaying from
    ``learning_rate`` to 0 on a cosine), maximizing the sum over images of
    the one-sample ELBO (each image's parameters see only their own image's gradient). Returns
    the curve: the mean ELBO over images, averaged over each STEPS_PER_CALL steps."""
    x = tf.constant(images, tf.float32)
    # cosine decay to 0: the last steps average out the noise of one-sample gradients
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    optimizer.build(posterior.variables)
    latent_dim = posterior.networks.latent_dim

    def one_step(step):
        key = streams.key("gap_refinement", seed, step)
        eps = vae.standard_normal([1, len(images), latent_dim], key)
        with tf.GradientTape() as tape:
            q = posterior.q()
            z, log_q = vae.sample_and_log_prob(q, eps)
            log_weights, log_px_given_z = vae.log_importance_weights(
                x, z, log_q, posterior.networks.generative
            )
            elbo = vae.elbo(log_px_given_z, log_weights, q)[0]
            loss = -tf.reduce_sum(elbo)
        gradients = tape.gradient(loss, posterior.variables)
        optimizer.apply(gradients, posterior.variables)
        return tf.reduce_mean(elbo)

    @tf.function(jit_compile=True)
    def steps_call(first, count):  # count: a Python int (a second trace for a shorter last call)
        total = tf.constant(0.0)
        for i in range(count):
            total += one_step(first + i)
        return total / count

    rows, start = [], time.perf_counter()
    every = max(1, steps // STEPS_PER_CALL // 10)
    for first in range(0, steps, STEPS_PER_CALL):
        count = min(STEPS_PER_CALL, steps - first)
        mean_elbo = float(steps_call(tf.constant(first, tf.int64), count))
        rows.append({"step": first + count, "mean_refined_elbo": round(mean_elbo, 4)})
        if len(rows) % every == 0 or first + count == steps:
            report(
                f"refining q*: step {first + count}/{steps}, mean one-sample ELBO "
                f"{mean_elbo:.2f} nats, {time.perf_counter() - start:.0f} s"
            )
    return pd.DataFrame(rows)


# --- the measurements ------------------------------------------------------------------------


@dataclass
class Gaps:
    """Per-image values, nats."""

    labels: np.ndarray
    log_px: np.ndarray
    elbo_amortized: np.ndarray
    elbo_refined: np.ndarray
    expected_log_likelihood: np.ndarray  # under the amortized q (how well x is reconstructed)
    mc_error: np.ndarray  # standard error of elbo_refined - elbo_amortized

    @property
    def approximation_gap(self):
        return self.log_px - self.elbo_refined

    @property
    def amortization_gap(self):
        return self.elbo_refined - self.elbo_amortized

    def per_digit(self) -> pd.DataFrame:
        return per_digit_means(
            self.labels,
            {
                "log_px": self.log_px,
                "elbo_amortized": self.elbo_amortized,
                "elbo_refined": self.elbo_refined,
                "approximation_gap": self.approximation_gap,
                "amortization_gap": self.amortization_gap,
            },
        )


def measure(networks, refined: RefinedPosterior, images, labels, k: int, seed: int) -> Gaps:
    amortized = ImportanceSampler(networks, k, seed, purpose="gap_amortized")(images)
    n = len(images)
    refined_sampler = ImportanceSampler(
        networks,
        k,
        seed,
        posterior=lambda x, rows: refined.q(tf.minimum(rows, n - 1)),  # padding rows: any image
        purpose="gap_refined",
    )(images)
    better = refined_sampler["elbo"] >= amortized["elbo"]
    return Gaps(
        labels=labels,
        log_px=np.where(better, refined_sampler["log_px"], amortized["log_px"]),
        elbo_amortized=amortized["elbo"],
        elbo_refined=refined_sampler["elbo"],
        expected_log_likelihood=amortized["expected_log_likelihood"],
        mc_error=np.hypot(amortized["elbo_standard_error"], refined_sampler["elbo_standard_error"]),
    )


# --- latent_dim 2: the exact posterior on a grid ---------------------------------------------


def log_joint_on_grid(generative_network, image, points) -> np.ndarray:
    """log p(x, z) = log p(x|z) + log p(z) at the points (P, 2), for one image."""
    values = []
    for chunk in np.array_split(points, max(1, len(points) // 8192)):
        z = tf.constant(chunk, tf.float32)
        log_px_given_z = vae.likelihood(generative_network, z).log_prob(image[None])
        values.append(np.asarray(log_px_given_z + vae.prior(2).log_prob(z), np.float64))
    return np.concatenate(values)


@dataclass
class GridPosterior:
    """p(z|x) on a regular grid: log p(x) by the rectangle rule and the normalized density."""

    a: np.ndarray  # (G,) first coordinate
    b: np.ndarray  # (G,) second coordinate
    log_density: np.ndarray  # (G, G) log p(z|x), rows along b
    log_px: float


def grid_posterior(generative_network, image, centre_box=None) -> GridPosterior:
    """A coarse grid over [-6, 6]^2 finds where the posterior mass is (log p(x, z) within 30 nats
    of its maximum), a fine grid over that box (and ``centre_box``) integrates it."""
    coarse = np.linspace(-GRID_LIMIT, GRID_LIMIT, COARSE_GRID)
    a, b = np.meshgrid(coarse, coarse)
    log_joint = log_joint_on_grid(generative_network, image, np.stack([a.ravel(), b.ravel()], 1))
    mass = log_joint >= log_joint.max() - 30
    step = coarse[1] - coarse[0]
    low = np.array([a.ravel()[mass].min(), b.ravel()[mass].min()]) - 2 * step
    high = np.array([a.ravel()[mass].max(), b.ravel()[mass].max()]) + 2 * step
    if centre_box is not None:
        low, high = np.minimum(low, centre_box[0]), np.maximum(high, centre_box[1])
    fine_a = np.linspace(low[0], high[0], FINE_GRID)
    fine_b = np.linspace(low[1], high[1], FINE_GRID)
    a, b = np.meshgrid(fine_a, fine_b)
    log_joint = log_joint_on_grid(generative_network, image, np.stack([a.ravel(), b.ravel()], 1))
    cell = (fine_a[1] - fine_a[0]) * (fine_b[1] - fine_b[0])
    top = log_joint.max()
    log_px = float(top + np.log(np.sum(np.exp(log_joint - top))) + np.log(cell))
    return GridPosterior(fine_a, fine_b, (log_joint - log_px).reshape(FINE_GRID, FINE_GRID), log_px)


def q_box(refined: RefinedPosterior, index: int, width: float = 5.0):
    """The box of loc +- width * scale of q*'s base Gaussian for one image."""
    loc = refined.loc.numpy()[index]
    scale = tf.math.softplus(refined.raw_scale).numpy()[index]
    return loc - width * scale, loc + width * scale


def quadrature(networks, refined, images, count: int):
    """The grid posterior (with log p(x) by quadrature) of each of the first ``count`` images."""
    return [grid_posterior(networks.generative, images[i], q_box(refined, i)) for i in range(count)]


def chosen_examples(gaps: Gaps, exact_log_px: np.ndarray) -> dict[str, list[int]]:
    """Among the images with an exact log p(x) (the first len(exact_log_px)): two easy (highest
    log p(x)), two ambiguous (the largest exact approximation gap, log p(x) - ELBO[q*]: p(z|x)
    least like what local refinement reaches) and the two reconstructed worst (lowest
    E_q[log p(x|z)])."""
    count = len(exact_log_px)
    chosen: dict[str, list[int]] = {}
    taken: set[int] = set()
    orders = {
        "easy": np.argsort(-exact_log_px),
        "ambiguous": np.argsort(-(exact_log_px - gaps.elbo_refined[:count])),
        "reconstructed worst": np.argsort(gaps.expected_log_likelihood[:count]),
    }
    for kind, order in orders.items():
        chosen[kind] = [int(i) for i in order if int(i) not in taken][:2]
        taken.update(chosen[kind])
    return chosen


def quadrature_metrics(gaps: Gaps, exact: np.ndarray) -> dict:
    """Importance sampling against quadrature on the first len(exact) images, and the gaps with
    the exact log p(x) there: where p(z|x) has its mass away from q and from what local
    refinement reaches, importance sampling from them cannot see it, and both are too low."""
    count = len(exact)
    difference = np.abs(gaps.log_px[:count] - exact)
    refined, amortized = gaps.elbo_refined[:count], gaps.elbo_amortized[:count]
    return {
        "quadrature_examples": count,
        "log_px_quadrature": round(float(exact.mean()), 4),
        "log_px_importance_sampled_same_images": round(float(gaps.log_px[:count].mean()), 4),
        "mean_abs_difference_importance_sampling_vs_quadrature": round(float(difference.mean()), 4),
        "median_abs_difference_importance_sampling_vs_quadrature": round(
            float(np.median(difference)), 4
        ),
        "share_within_0.05_nats_of_quadrature": round(float(np.mean(difference <= 0.05)), 4),
        "approximation_gap_exact_log_px": round(float((exact - refined).mean()), 4),
        "amortization_gap_same_images": round(float((refined - amortized).mean()), 4),
    }


def true_posterior_figure(networks, refined, images, gaps: Gaps, grids, chosen):
    fig = new_figure(SIZES[POSTERIOR_FIGURE], layout="constrained")
    axes = fig.subplots(2, 3).T.ravel()  # columns: easy, ambiguous, reconstructed worst
    for ax, (kind, index) in zip(axes, [(k, i) for k, ids in chosen.items() for i in ids]):
        grid = grids[index]
        extent = (grid.a[0], grid.a[-1], grid.b[0], grid.b[-1])
        density = np.exp(grid.log_density)
        ax.imshow(
            density,
            origin="lower",
            extent=extent,
            aspect="auto",
            cmap="Greys",
            vmin=0,
            vmax=2 * density.max(),  # at most mid-grey: the contours stay readable over it
            interpolation="nearest",
        )
        x = tf.constant(images[index : index + 1], tf.float32)
        amortized = vae.approximate_posterior(networks, x)
        # the view: the grid and both q's (their base Gaussians' loc +- 3 scale)
        boxes = [(np.array(extent[::2]), np.array(extent[1::2])), q_box(refined, index, 3.0)]
        loc, scale = (np.asarray(t)[0] for t in networks.inference(x)[:2])
        boxes.append((loc - 3 * scale, loc + 3 * scale))
        low, high = np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)
        a, b = np.meshgrid(*(np.linspace(lo, hi, 240) for lo, hi in zip(low, high)))
        points = tf.constant(np.stack([a.ravel(), b.ravel()], 1)[:, None, :], tf.float32)
        for q, colour, style, name in (
            (amortized, "tab:orange", "-", "amortized q(z|x)"),
            (refined.q([index]), "tab:blue", "--", "refined q*(z|x)"),
        ):
            density = np.exp(np.asarray(q.log_prob(points)).reshape(a.shape))
            levels = density.max() * np.exp(-0.5 * np.array([4.0, 1.0]))  # "2 and 1 sigma"
            ax.contour(
                a, b, density, levels=levels, colors=colour, linestyles=style, linewidths=1.2
            )
            ax.plot([], [], color=colour, linestyle=style, label=name)
        inset = ax.inset_axes([0.02, 0.70, 0.28, 0.28])
        inset.imshow(images[index].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        inset.set_xticks([])
        inset.set_yticks([])
        ax.set_title(
            f"{kind}: digit {int(gaps.labels[index])}\nlog p(x) {grid.log_px:.1f}, "
            f"ELBO[q*] {gaps.elbo_refined[index]:.1f}, ELBO[q] {gaps.elbo_amortized[index]:.1f}",
            fontsize=9,
        )
        ax.set(xlabel="z1", ylabel="z2", xlim=(low[0], high[0]), ylim=(low[1], high[1]))
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "Exact posterior p(z|x) on a grid (grey; normalizer by quadrature) with contours of the "
        "amortized q(z|x) and the refined q*(z|x) (density at exp(-1/2) and exp(-2) of its peak)",
        fontsize=10,
    )
    return fig


def no_true_posterior_figure(latent_dim: int):
    fig = new_figure(SIZES[POSTERIOR_FIGURE])
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


def gap_figure(per_digit: pd.DataFrame, how: str):
    fig = new_figure(SIZES[GAP_FIGURE], layout="constrained")
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


# --- the stage -------------------------------------------------------------------------------


def main() -> None:
    config = params.load(PARAMS)
    networks = vae.load_networks(MODELS)
    test = load_split("test")
    count = min(config["gap_examples"], len(test.images))
    images, labels = test.images[:count].astype(np.float32), test.labels[:count]
    start = time.perf_counter()
    family = "IAF" if networks.has_flow else "Gaussian"
    log(f"{count} test images, {family} posterior: refining q* for {config['gap_steps']} steps")
    refined = RefinedPosterior(networks, images)
    curve = refine(
        refined, images, config["gap_steps"], config["gap_learning_rate"], config["seed"]
    )
    gaps = measure(networks, refined, images, labels, config["gap_samples"], config["seed"])
    below = int(np.sum(gaps.elbo_refined < gaps.elbo_amortized - 3 * gaps.mc_error))
    metrics = {
        "examples": count,
        "posterior": family.lower(),
        "log_px": round(float(gaps.log_px.mean()), 4),
        "elbo_amortized": round(float(gaps.elbo_amortized.mean()), 4),
        "elbo_refined": round(float(gaps.elbo_refined.mean()), 4),
        "approximation_gap": round(float(gaps.approximation_gap.mean()), 4),
        "amortization_gap": round(float(gaps.amortization_gap.mean()), 4),
        "total_gap": round(float((gaps.log_px - gaps.elbo_amortized).mean()), 4),
        "refined_below_amortized_beyond_3_standard_errors": below,
        "mean_standard_error_of_the_difference": round(float(gaps.mc_error.mean()), 4),
        "refinement_gain_last_10_percent_of_steps": round(
            float(
                curve["mean_refined_elbo"].iloc[-1]
                - curve["mean_refined_elbo"].iloc[int(len(curve) * 0.9) - 1]
            ),
            4,
        ),
    }
    log(
        f"log p(x) {metrics['log_px']:.2f}, ELBO[q*] {metrics['elbo_refined']:.2f}, "
        f"ELBO[q] {metrics['elbo_amortized']:.2f}: approximation gap "
        f"{metrics['approximation_gap']:.2f}, amortization gap {metrics['amortization_gap']:.2f} "
        f"nats; {below} images with ELBO[q*] below ELBO[q] by more than 3 standard errors"
    )
    if networks.latent_dim == 2:
        quad = min(QUADRATURE_EXAMPLES, count)
        grids = quadrature(networks, refined, images, quad)
        exact = np.array([grid.log_px for grid in grids])
        metrics.update(quadrature_metrics(gaps, exact))
        log(
            f"log p(x) of {quad} images: quadrature {exact.mean():.3f}, importance sampling "
            f"{gaps.log_px[:quad].mean():.3f}; |difference| mean "
            f"{metrics['mean_abs_difference_importance_sampling_vs_quadrature']:.4f}, median "
            f"{metrics['median_abs_difference_importance_sampling_vs_quadrature']:.4f} nats"
        )
        posterior_figure = true_posterior_figure(
            networks, refined, images, gaps, grids, chosen_examples(gaps, exact)
        )
    else:
        posterior_figure = no_true_posterior_figure(networks.latent_dim)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["device"] = devices.describe()
    per_digit = gaps.per_digit()
    with StagedOutputs() as out:
        out.json(METRICS, metrics)
        per_digit.to_csv(out.file(PER_DIGIT), index=False)
        curve.to_csv(out.file(CURVE), index=False)
        save_png(
            gap_figure(per_digit, f"{family} posterior, {count} test images"), out.file(GAP_FIGURE)
        )
        save_png(posterior_figure, out.file(POSTERIOR_FIGURE))
    log(f"wrote {METRICS}, {PER_DIGIT}, {CURVE}, {GAP_FIGURE}, {POSTERIOR_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
