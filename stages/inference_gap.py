"""Stage inference_gap: the post's "mean-field versus amortized inference", measured.

"If we see a new datapoint ... we can run variational inference again (maximizing the ELBO until
convergence), or trust that the shared parameters are good enough." For each of ``gap_examples``
test images this stage does both (``latent.estimators.refinement``: q* refined by
``gap_steps`` Adam steps at ``gap_learning_rate``) and measures what the choice costs, the
approximation and amortization gaps (``latent.estimators.gaps``, ``gap_samples`` importance
samples each). For latent_dim 2 it also computes log p(x) by grid quadrature
(``latent.estimators.quadrature``) for QUADRATURE_EXAMPLES images, beside the IS estimate.

Reads models/ and the prepared test split. Writes
  metrics/inference_gap.json            the means over the images (nats per example)
  metrics/inference_gap_per_digit.csv   the same by digit
  metrics/inference_gap_curve.csv       the mean ELBO of the refined q* during refinement
  data/estimates/inference_gap.csv      per image: log p(x), ELBO[q], ELBO[q*] and the exact
                                         log p(x) where quadrature gave one (DVC-cached: a plain
                                         git-tracked out would cost the stage its run-cache
                                         entry; the ais stage reads it)
  figures/inference_gap.png             per digit, the two gaps as stacked bars
  figures/true_posterior.png            latent_dim 2: the exact posterior p(z|x) on a grid for 6
                                         test digits, with the contours of q and q* (other latent
                                         sizes: a note saying why there is no such picture)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from latent.data.datasets import load_split
from latent.estimators import gaps as inference_gaps
from latent.estimators.quadrature import grid_posteriors
from latent.estimators.refinement import RefinedPosterior, refine
from latent.plotting import gaps as gap_figures
from latent.plotting.canvas import save_png
from latent.plumbing import devices, params
from latent.plumbing.runtime import log, run_stage
from latent.records import model_files
from latent.records.atomic import StagedOutputs

METRICS = Path("metrics/inference_gap.json")
PER_DIGIT = Path("metrics/inference_gap_per_digit.csv")
CURVE = Path("metrics/inference_gap_curve.csv")
PER_IMAGE = Path("data/estimates/inference_gap.csv")
GAP_FIGURE = Path("figures/inference_gap.png")
POSTERIOR_FIGURE = Path("figures/true_posterior.png")
QUADRATURE_EXAMPLES = 200  # latent_dim 2: log p(x) by quadrature for this many images


def refined_gaps(config, networks, images, labels):
    """(gaps, refined q*, refinement curve) of the images."""
    refined = RefinedPosterior(networks, images)
    curve = refine(refined, images, config.gap_steps, config.gap_learning_rate, config.seed)
    measured = inference_gaps.measure(
        networks, refined, images, labels, config.gap_samples, config.seed
    )
    return measured, refined, curve


def exact_posterior_check(networks, refined, images, gaps):
    """latent_dim 2: (quadrature metrics, the exact-posterior figure, the exact log p(x)) of
    the first images."""
    count = min(QUADRATURE_EXAMPLES, len(images))
    boxes = [refined.box(i) for i in range(count)]
    grids = grid_posteriors(networks, images[:count], boxes)
    exact = np.array([grid.log_px for grid in grids])
    metrics = inference_gaps.quadrature_metrics(gaps, exact)
    log(
        f"log p(x) of {count} images: quadrature {exact.mean():.3f}, importance sampling "
        f"{gaps.log_px[:count].mean():.3f}; |difference| mean "
        f"{metrics['mean_abs_difference_importance_sampling_vs_quadrature']:.4f}, median "
        f"{metrics['median_abs_difference_importance_sampling_vs_quadrature']:.4f} nats"
    )
    chosen = inference_gaps.chosen_examples(gaps, exact)
    figure = gap_figures.true_posterior_figure(networks, refined, images, gaps, grids, chosen)
    return metrics, figure, exact


def main() -> None:
    config = params.load("inference_gap")
    networks = model_files.load_networks()
    images, labels = load_split("test").first(config.gap_examples)
    count = len(images)
    start = time.perf_counter()
    family = "IAF" if networks.has_flow else "Gaussian"
    log(f"{count} test images, {family} posterior: refining q* for {config.gap_steps} steps")
    gaps, refined, curve = refined_gaps(config, networks, images, labels)
    metrics = inference_gaps.gap_metrics(gaps, curve, family)
    log(
        f"log p(x) {metrics['log_px']:.2f}, ELBO[q*] {metrics['elbo_refined']:.2f}, "
        f"ELBO[q] {metrics['elbo_amortized']:.2f}: approximation gap "
        f"{metrics['approximation_gap']:.2f}, amortization gap {metrics['amortization_gap']:.2f} "
        f"nats; {metrics['refined_below_amortized_beyond_3_standard_errors']} images with "
        "ELBO[q*] below ELBO[q] by more than 3 standard errors"
    )
    if networks.latent_dim == 2:
        quadrature, posterior_figure, exact = exact_posterior_check(networks, refined, images, gaps)
        metrics.update(quadrature)
    else:
        posterior_figure = gap_figures.no_true_posterior_figure(networks.latent_dim)
        exact = None
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["device"] = devices.describe()
    per_digit = gaps.per_digit()
    with StagedOutputs() as out:
        out.json(METRICS, metrics)
        per_digit.to_csv(out.file(PER_DIGIT), index=False)
        curve.to_csv(out.file(CURVE), index=False)
        gaps.per_image(exact).to_csv(out.file(PER_IMAGE), index=False)
        how = f"{family} posterior, {count} test images"
        save_png(gap_figures.gap_figure(per_digit, how), out.file(GAP_FIGURE))
        save_png(posterior_figure, out.file(POSTERIOR_FIGURE))
    log(f"wrote {METRICS}, {PER_DIGIT}, {CURVE}, {PER_IMAGE}, {GAP_FIGURE}, {POSTERIOR_FIGURE}")


if __name__ == "__main__":
    run_stage(main)
