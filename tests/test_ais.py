"""Annealed importance sampling: exact on the linear-Gaussian model whose marginal is known, one
step of it is importance sampling with as many samples as chains, it rises with the number of
steps, forward and reverse AIS sandwich log p(x) and meet, quadrature agrees, and the stage
writes what it documents and refuses bad params in one line."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from latent.estimators import ais
from latent.estimators.importance_sampling import ImportanceSampler
from latent.estimators.quadrature import grid_posterior
from latent.model import vae
from latent.plumbing import params, streams
from latent.records import model_files
from stages import ais as ais_stage
from stages import inference_gap
from tests.conftest import chdir, make_workspace, write_params
from tests.test_params import write


def sampler(networks, chains=16, initial="encoder"):
    return ais.AnnealedImportanceSampler(networks, chains, 10, "sigmoid", seed=0, initial=initial)


@pytest.mark.parametrize("initial", ["encoder", "prior"])
def test_ais_matches_the_exact_marginal_of_the_linear_gaussian_model(linear_gaussian, initial):
    """From an untrained encoder (or the prior), far from the posterior (IS with k = 16 misses
    log p(x) by up to 30 nats here), AIS with 2000 steps is within 0.1 nats of it for every
    image, 0.03 on average."""
    networks, images, _, _, marginal = linear_gaussian
    values = sampler(networks, initial=initial)(images, 2000)
    np.testing.assert_array_less(np.abs(values["log_px"] - marginal), 0.1)
    assert abs(np.mean(values["log_px"] - marginal)) < 0.03
    assert 0.4 < values["acceptance"].mean() < 0.9  # the step size was adapted


def test_a_truncated_schedule_is_the_linear_or_sigmoid_path_from_0_to_1():
    for kind in ("linear", "sigmoid"):
        betas = ais.schedule(100, kind)
        assert betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
    sigmoid = ais.schedule(100, "sigmoid")
    assert sigmoid[1] < 0.01 < 0.99 < sigmoid[-2]  # denser at both ends than linear


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory):
    """A trained fixture model (latent 2) and 32 of its test images."""
    workspace = make_workspace(tmp_path_factory.mktemp("ais"), epochs=5)
    networks = model_files.load_networks(workspace / "models")
    images = np.load(workspace / "data/prepared/test_images.npy")[:32].astype(np.float32)
    return workspace, networks, images


def test_one_step_is_importance_sampling_with_as_many_samples_as_chains(fixture_model):
    _, networks, images = fixture_model
    values = sampler(networks)(images, 1)
    # the same draws: the IWAE bound of the chains' initial eps
    first = []
    for tile in range(math.ceil(len(images) / ais.TILE)):
        x = images[tile * ais.TILE : (tile + 1) * ais.TILE]
        key = streams.key("ais_initial", 0, tile)
        eps = vae.standard_normal([16, len(x), 2], key)
        first.append(vae.bounds_per_example(x, networks, eps)["iwae"].numpy())
    np.testing.assert_allclose(values["log_px"], np.concatenate(first), atol=1e-3)
    # and other draws of IS with k = 16 agree within Monte Carlo error
    difference = values["log_px"] - ImportanceSampler(networks, 16, seed=3)(images)["log_px"]
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(images))


def test_the_estimate_rises_with_the_steps_and_is_reproducible(fixture_model):
    _, networks, images = fixture_model
    estimator = sampler(networks)
    means = [estimator(images, steps)["log_px"].mean() for steps in (1, 10, 100)]
    assert means[0] < means[1] < means[2]
    again = sampler(networks)(images, 10)["log_px"]
    assert np.array_equal(again, estimator(images, 10)["log_px"])


def test_forward_and_reverse_ais_sandwich_log_px_and_meet_with_more_steps(fixture_model):
    """BDMC on images simulated from the model: the reverse chains, started at the z that made
    each image, bound log p(x) from above, the forward ones from below, and the exact log p(x)
    by quadrature (latent 2) lies between them; the sandwich narrows with more steps."""
    _, networks, _ = fixture_model
    x, z = ais.simulate(networks, 16, seed=0)
    estimator = sampler(networks)
    exact = np.array([grid_posterior(networks, image).log_px for image in x])
    gaps = []
    for steps in (3, 100):
        lower = estimator(x, steps)["log_px"]
        upper = estimator.reverse(x, z, steps)["log_px"]
        assert lower.mean() <= exact.mean() + 0.02 and exact.mean() <= upper.mean() + 0.02
        gaps.append(np.mean(upper - lower))
    assert 0 < gaps[1] < gaps[0] and gaps[1] < 0.2


def test_noise_of_inverts_the_reparameterization_also_through_a_flow(fixture_model):
    _, _, images = fixture_model
    tf.keras.utils.set_random_seed(0)
    networks = vae.make_networks(2, [16], "tanh", "iaf", flow_steps=2)
    x = tf.constant(images[:4])
    eps = tf.random.stateless_normal([4, 2], seed=[1, 2])
    z, _ = vae.sample_and_log_prob(vae.approximate_posterior(networks, x), eps[None])
    np.testing.assert_allclose(sampler(networks).noise_of(x, z[0]), eps, atol=1e-4)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("ais_steps", [0, 10], "a non-empty increasing list of integers from 1 to 1048575"),
        ("ais_steps", [100, 10], "a non-empty increasing list of integers from 1 to 1048575"),
        ("ais_chains", 0, "an integer >= 1"),
        ("ais_schedule", "cosine", "one of sigmoid, linear"),
    ],
)
def test_bad_ais_params_are_one_line(tmp_path, key, value, allowed):
    with pytest.raises(params.ParamError) as error:
        params.load_keys([key], write(tmp_path / "p.yaml", **{key: value}))
    message = str(error.value)
    assert (
        "\n" not in message and f"{key} = {value!r} is not allowed; expected {allowed}" in message
    )


STAGE_PARAMS = dict(epochs=5, gap_examples=20, ais_examples=20, ais_chains=8, bdmc_examples=8)


@pytest.fixture(scope="module")
def gaps_written(fixture_model):
    """The fixture model's workspace with the inference_gap stage run on 20 test images (what
    the ais stage reads besides the model)."""
    workspace, _, _ = fixture_model
    write_params(workspace, **STAGE_PARAMS)
    with chdir(workspace):
        inference_gap.main()
    return workspace


@pytest.mark.parametrize("initial, steps", [("encoder", 20), ("prior", 200)])
def test_stage_writes_the_estimate_the_comparisons_and_the_curve(gaps_written, initial, steps):
    """From the encoder (the latent-50 protocol) or the prior (the default run's), AIS on a
    latent-2 model is as close to the exact log p(x) as IS, or closer."""
    workspace = gaps_written
    write_params(workspace, **STAGE_PARAMS, ais_steps=[2, steps], ais_initial=initial)
    with chdir(workspace):
        ais_stage.main()
    metrics = json.loads((workspace / ais_stage.METRICS).read_text())
    assert metrics["examples"] == 20 and metrics["steps"] == steps
    assert metrics["initial"] == initial and metrics["chains"] == 8
    assert metrics["quadrature_examples"] == 20  # latent 2: the exact log p(x) of each image
    assert metrics["mean_abs_ais_minus_quadrature"] < metrics["mean_abs_is_minus_quadrature"] + 0.5
    assert metrics["bdmc_lower"] <= metrics["bdmc_upper"] + 0.05
    gaps = pd.read_csv(workspace / "data/estimates/inference_gap.csv")
    estimates = pd.read_csv(workspace / ais_stage.PER_IMAGE)
    with_ais = (estimates["log_px_ais"] - gaps["elbo_refined"]).mean()
    assert metrics["approximation_gap_ais"] == pytest.approx(with_ais, abs=1e-3)
    exact = gaps["log_px_quadrature"].iloc[:20].mean()
    assert metrics["quadrature_log_px"] == pytest.approx(exact, abs=1e-3)
    assert metrics["ais_log_px"] == pytest.approx(estimates["log_px_ais"].mean(), abs=1e-3)
    curve = (workspace / ais_stage.CURVE).read_text().splitlines()
    assert curve[0].startswith("steps,ais_log_px,acceptance,seconds,bdmc_lower,bdmc_upper")
    assert [line.split(",")[0] for line in curve[1:]] == ["2", str(steps)]
    per_image = (workspace / ais_stage.PER_IMAGE).read_text().splitlines()
    assert (
        per_image[0] == "test_index,digit,log_px_ais,log_px_is,acceptance" and len(per_image) == 21
    )
    assert (workspace / ais_stage.FIGURE).stat().st_size > 10_000
