"""The inference-gap stage: on a linear-Gaussian model, where p(z|x) and p(x) are known in closed
form, refinement recovers the exact posterior and quadrature the exact marginal; on a trained
fixture model the refined ELBO is never below the amortized one beyond Monte Carlo error and
importance sampling agrees with quadrature; the stage writes what it documents."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from latent.estimators import gaps as inference_gaps
from latent.estimators import quadrature, refinement
from latent.plotting import canvas
from latent.plotting import gaps as gap_figures
from stages import inference_gap
from tests.conftest import chdir, make_workspace
from tests.test_figures import panel_count


def test_refinement_recovers_the_exact_gaussian_posterior(linear_gaussian):
    networks, images, mean, sd, marginal = linear_gaussian
    refined = refinement.RefinedPosterior(networks, images)
    curve = refinement.refine(refined, images, 1500, 0.05, seed=0, report=lambda m: None)
    # within a sixth of a posterior sd (a KL of 0.014 nats at most): one-sample noise remains
    np.testing.assert_allclose((refined.loc.numpy() - mean) / sd, 0, atol=1 / 6)
    np.testing.assert_allclose(
        tf.math.softplus(refined.raw_scale).numpy(), sd[None].repeat(8, 0), rtol=0.15
    )
    gaps = inference_gaps.measure(networks, refined, images, np.zeros(8), k=4000, seed=0)
    # the approximation gap vanishes within Monte Carlo error; amortizing costs nats here
    assert np.all(np.abs(gaps.approximation_gap) < 4 * gaps.mc_error + 0.02)
    assert np.all(gaps.amortization_gap > 0)
    np.testing.assert_allclose(gaps.log_px, marginal, atol=0.02)
    assert curve["mean_refined_elbo"].iloc[-1] > curve["mean_refined_elbo"].iloc[0]


def test_quadrature_gives_the_analytic_marginal(linear_gaussian):
    networks, images, _, _, marginal = linear_gaussian
    for image, exact in zip(images[:3], marginal[:3]):
        grid = quadrature.grid_posterior(networks, image)
        assert grid.log_px == pytest.approx(exact, abs=1e-3)
        cell = (grid.a[1] - grid.a[0]) * (grid.b[1] - grid.b[0])
        assert np.exp(grid.log_density).sum() * cell == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def gap_workspace(tmp_path_factory):
    """A trained fixture model and the stage run on it (latent_dim 2, so quadrature too)."""
    workspace = make_workspace(
        tmp_path_factory.mktemp("gap"), epochs=5, gap_examples=24, gap_steps=200, gap_samples=5000
    )
    with chdir(workspace):
        inference_gap.main()
    return workspace


def test_stage_metrics_are_consistent_and_refinement_never_loses(gap_workspace):
    metrics = json.loads((gap_workspace / inference_gap.METRICS).read_text())
    assert metrics["examples"] == 24 and metrics["posterior"] == "gaussian"
    assert metrics["elbo_amortized"] <= metrics["elbo_refined"] <= metrics["log_px"]
    assert metrics["approximation_gap"] == pytest.approx(
        metrics["log_px"] - metrics["elbo_refined"], abs=1e-3
    )
    assert metrics["total_gap"] == pytest.approx(
        metrics["approximation_gap"] + metrics["amortization_gap"], abs=1e-3
    )
    assert metrics["refined_below_amortized_beyond_3_standard_errors"] == 0
    # log p(x): importance sampling against quadrature on the real (fixture) model
    assert metrics["quadrature_examples"] == 24
    assert metrics["mean_abs_difference_importance_sampling_vs_quadrature"] < 0.05
    per_digit = (gap_workspace / inference_gap.PER_DIGIT).read_text().splitlines()
    assert per_digit[0].startswith("digit,examples,log_px,elbo_amortized,elbo_refined")
    assert sum(int(row.split(",")[1]) for row in per_digit[1:]) == 24
    curve = (gap_workspace / inference_gap.CURVE).read_text().splitlines()
    assert curve[0] == "step,mean_refined_elbo" and len(curve) == 1 + 200 // 10


def test_stage_figures_show_the_gaps_and_six_posteriors(gap_workspace):
    sizes = {
        inference_gap.GAP_FIGURE: gap_figures.GAP_SIZE,
        inference_gap.POSTERIOR_FIGURE: gap_figures.POSTERIOR_SIZE,
    }
    for path, size in sizes.items():
        with Image.open(gap_workspace / path) as image:
            assert image.size == canvas.pixel_size(size)
            assert 0.01 < np.mean(np.asarray(image.convert("L")) < 200) < 0.9
    # six posteriors (frames wider than the digit insets in their corners)
    assert panel_count(gap_workspace / inference_gap.POSTERIOR_FIGURE, min_run=150) == 6


def test_chosen_examples_are_six_distinct_images():
    rng = np.random.default_rng(0)
    gaps = inference_gaps.Gaps(
        labels=np.zeros(20),
        log_px=rng.normal(size=20),
        elbo_amortized=rng.normal(size=20) - 3,
        elbo_refined=rng.normal(size=20) - 2,
        expected_log_likelihood=rng.normal(size=20),
        mc_error=np.ones(20),
    )
    exact = rng.normal(size=15)
    chosen = inference_gaps.chosen_examples(gaps, exact)
    indices = [i for ids in chosen.values() for i in ids]
    assert len(indices) == 6 == len(set(indices)) and max(indices) < 15
    assert chosen["easy"] == list(np.argsort(-exact)[:2])
