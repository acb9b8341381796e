"""The importance-sampled log p(x): exact on a model where log p(x) can be computed, a bound
above the ELBO, rising with k, and independent of how the work is chunked."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from latent.estimators import importance_sampling
from latent.model import vae
from latent.model.flow import PosteriorFlow
from latent.records import model_files
from stages import evaluate
from tests.conftest import chdir


def log_sum_exp(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def set_constant_posterior(encoder, loc, scale):
    """Make q(z|x) = N(loc, scale^2) for every x (zero kernels, chosen biases)."""
    for layer in encoder.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            if layer.name == "loc":
                bias = np.full_like(bias, loc)
            elif layer.name == "scale":
                bias = np.full_like(bias, math.log(math.expm1(scale)))  # softplus^-1
            layer.set_weights([np.zeros_like(kernel), bias])


def all_draws(sampler, n):
    """The sampler's eps for examples 0..n-1, every one materialised: (k, n, L)."""
    draw = tf.function(sampler.eps, jit_compile=True)
    tiles = []
    for t in range(math.ceil(n / importance_sampling.TILE)):
        blocks = [draw(tf.constant(t, tf.int64), tf.constant(b)) for b in range(sampler.blocks)]
        tiles.append(tf.concat(blocks, axis=0)[: sampler.k])  # (k, TILE, L)
    return tf.concat(tiles, axis=1)[:, :n]


def random_encoder_case(one_dimensional_model):
    """150 random images, the fixture's decoder with a fresh encoder, and k = 300 from seed 3
    (5 blocks of 64, the last partial; 3 tiles, the last partial)."""
    _, decoder, *_ = one_dimensional_model
    tf.keras.utils.set_random_seed(1)
    encoder = vae.make_inference_network(1, [4], "tanh")
    images = (np.random.default_rng(1).random((150, 784)) < 0.3).astype(np.float32)
    networks = vae.Networks(encoder, decoder)
    return images, networks, importance_sampling.ImportanceSampler(networks, k=300, seed=3)


@pytest.fixture(scope="module")
def one_dimensional_model():
    """latent_dim 1: log p(x) = log of a 1-D integral, computed by quadrature on a fine grid."""
    tf.keras.utils.set_random_seed(0)
    encoder = vae.make_inference_network(1, [4], "tanh")
    decoder = vae.make_generative_network(1, [8], "tanh")
    for layer in decoder.layers:  # sharper likelihood: posterior sd ~0.2, far from the prior
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([3 * kernel, bias])
    x = (np.random.default_rng(0).random((6, 784)) < 0.3).astype(np.float32)
    grid = np.linspace(-12, 12, 200_001)
    step = grid[1] - grid[0]
    logits = decoder(grid[:, None].astype(np.float32)).numpy().astype(np.float64)
    log_px_given_z = x @ logits.T - np.logaddexp(0, logits).sum(axis=1)  # (6, grid)
    log_joint = log_px_given_z - 0.5 * grid**2 - 0.5 * math.log(2 * math.pi)
    exact = log_sum_exp(log_joint, axis=1) + math.log(step)
    posterior = np.exp(log_joint - exact[:, None]) * step
    mean = posterior @ grid
    sd = np.sqrt(posterior @ grid**2 - mean**2)
    return encoder, decoder, x, exact, mean, sd


def test_is_estimate_matches_exact_log_px_and_elbo_is_below(one_dimensional_model):
    encoder, decoder, x, exact, mean, sd = one_dimensional_model
    assert np.all(sd < 0.7)  # the posterior is far from the prior: not a trivial case
    for i in range(len(x)):
        # q = a Gaussian with the posterior's mean and sd: tolerance 0.01 nats
        set_constant_posterior(encoder, mean[i], sd[i])
        values = importance_sampling.ImportanceSampler(
            vae.Networks(encoder, decoder), k=5000, seed=i
        )(x[i : i + 1])
        assert abs(values["log_px"][0] - exact[i]) < 0.01
        assert values["elbo"][0] < exact[i]
    # q far from the posterior: the estimate is still within 0.1 nats, the ELBO nats below
    set_constant_posterior(encoder, 0.3, 0.8)
    values = importance_sampling.ImportanceSampler(vae.Networks(encoder, decoder), k=5000, seed=0)(
        x
    )
    np.testing.assert_array_less(np.abs(values["log_px"] - exact), 0.1)
    np.testing.assert_array_less(values["elbo"], exact - 1.0)


def test_chunked_and_unchunked_give_the_same_numbers(one_dimensional_model):
    images, networks, sampler = random_encoder_case(one_dimensional_model)
    one_tile_per_call = sampler(images, tiles_per_call=1)
    all_at_once = sampler(images, tiles_per_call=3)
    for name in one_tile_per_call:
        # the standard error is a spread of terms 1,000 times its size: a few float32 ulps of
        # difference in those terms (other kernels for other shapes) move it by ~1e-5
        rtol = 1e-4 if name == "elbo_standard_error" else 1e-6
        np.testing.assert_allclose(one_tile_per_call[name], all_at_once[name], rtol=rtol)

    # the same draws, unchunked: every eps materialised, the bounds computed in one go
    eps = all_draws(sampler, len(images))
    direct = vae.bounds_per_example(images, networks, eps)
    np.testing.assert_allclose(direct["iwae"], one_tile_per_call["log_px"], rtol=1e-5)
    np.testing.assert_allclose(direct["elbo"], one_tile_per_call["elbo"], rtol=1e-5)


def test_the_elbo_standard_error_is_the_spread_of_the_same_draws_in_float64(one_dimensional_model):
    """log p(x|z) is about -550 nats here and its sd about 5: E[t^2] - E[t]^2 in float32 was
    0.3 % off; the blockwise centred sums must agree with float64 to 1e-4."""
    images, networks, sampler = random_encoder_case(one_dimensional_model)
    values = sampler(images)
    eps = all_draws(sampler, len(images))
    z, log_q = vae.sample_and_log_prob(vae.approximate_posterior(networks, images), eps)
    _, log_px_given_z = vae.log_importance_weights(images, z, log_q, networks.generative_network)
    terms = log_px_given_z.numpy().astype(np.float64)  # (k, N)
    assert np.median(terms.std(axis=0)) < 0.02 * np.abs(terms).mean()  # a hard case
    expected = terms.std(axis=0) / math.sqrt(sampler.k)
    np.testing.assert_allclose(values["elbo_standard_error"], expected, rtol=1e-4)


def test_flow_posterior_estimate_matches_exact_log_px(one_dimensional_model):
    """The same estimator with an IAF q: log q comes from the flow's forward pass; a q that is
    a poor fit still gives log p(x) within 0.1 nats, and its Monte Carlo ELBO stays below."""
    encoder, decoder, x, exact, mean, sd = one_dimensional_model
    tf.keras.utils.set_random_seed(2)
    encoder = vae.make_inference_network(1, [4], "tanh", context_units=2)
    set_constant_posterior(encoder, 0.3, 1.0)
    flow = PosteriorFlow(1, steps=2, context_units=2)
    sampler = importance_sampling.ImportanceSampler(vae.Networks(encoder, decoder, flow), 5000, 0)
    values = sampler(x)
    np.testing.assert_array_less(np.abs(values["log_px"] - exact), 0.1)
    np.testing.assert_array_less(values["elbo"], exact)


def test_bound_rises_with_k_and_stays_above_the_elbo(trained_workspace):
    networks = model_files.load_networks(trained_workspace / "models")
    images = np.load(trained_workspace / "data/prepared/test_images.npy")[:64].astype(np.float32)
    means = {}
    for k in (1, 10, 100):
        values = importance_sampling.ImportanceSampler(networks, k=k, seed=0)(images)
        means[k] = values["log_px"].mean()
        if k == 1:  # one sample: log w itself, whose expectation is the ELBO
            difference = values["log_px"] - values["elbo"]
            assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(len(images))
        else:
            assert means[k] > values["elbo"].mean()
    assert means[1] < means[10] < means[100]


def test_same_seed_same_numbers_other_seed_other_numbers(trained_workspace):
    networks = model_files.load_networks(trained_workspace / "models")
    images = np.load(trained_workspace / "data/prepared/test_images.npy")[:10].astype(np.float32)
    a, b, c = (importance_sampling.ImportanceSampler(networks, 20, s)(images) for s in (5, 5, 6))
    assert np.array_equal(a["log_px"], b["log_px"]) and not np.array_equal(a["log_px"], c["log_px"])


def test_evaluate_stage_writes_documented_finite_metrics(trained_workspace, tmp_path):
    with chdir(trained_workspace):
        evaluate.main()
        metrics = json.loads(evaluate.METRICS.read_text())
        per_digit = evaluate.PER_DIGIT.read_text().splitlines()
    keys = {
        f"{split}_{name}"
        for split in ("test", "valid")
        for name in ("elbo", "log_px", "nll", "kl", "expected_log_likelihood")
    }
    others = {"eval_samples", "valid_eval_samples", "seconds", "device"}
    others |= {"active_units", "active_unit_threshold"}
    assert set(metrics) == keys | others
    assert 0 <= metrics["active_units"] <= 2
    assert all(math.isfinite(metrics[key]) for key in keys)
    assert metrics["eval_samples"] == 50 and metrics["valid_eval_samples"] == 20
    assert (
        metrics["test_elbo"] <= metrics["test_log_px"]
        and metrics["test_nll"] == -metrics["test_log_px"]
    )
    assert per_digit[0] == "digit,examples,log_px,elbo,kl" and len(per_digit) == 11
    assert sum(int(row.split(",")[1]) for row in per_digit[1:]) == 100


def test_a_unit_whose_encoder_output_ignores_x_is_inactive_and_kl_sums_to_the_elbos(
    trained_workspace,
):
    from latent.estimators import active_units

    networks = model_files.load_networks(trained_workspace / "models")
    images = np.load(trained_workspace / "data/prepared/test_images.npy").astype(np.float32)
    before = active_units.per_dimension(networks, images, seed=0)
    assert before["active"].all()  # the fixture model uses both of its units
    kernel, bias = networks.inference_network.get_layer("loc").get_weights()
    kernel[:, 1] = 0  # the second unit's posterior mean no longer depends on x
    networks.inference_network.get_layer("loc").set_weights([kernel, bias])
    after = active_units.per_dimension(networks, images, seed=0).set_index("dimension")
    assert not after.loc[2, "active"] and after.loc[1, "active"]
    assert after.loc[2, "posterior_mean_variance"] == 0
    q = vae.approximate_posterior(networks, tf.constant(images))
    total = float(tf.reduce_mean(vae.analytic_kl(q)))
    assert after["kl"].sum() == pytest.approx(total, rel=1e-4)
