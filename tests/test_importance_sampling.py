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


U = 2.0**-24  # float32's unit roundoff
ULPS = 4  # float32 exp, log, tanh and softplus are within a few units in the last place
ACTIVATIONS = {"linear": tf.identity, "tanh": tf.tanh, "softplus": tf.nn.softplus}


def gamma(n: int) -> float:
    """Higham's gamma_n: a float32 sum of n + 1 terms, added in any order, is within
    gamma_n * (the sum of their absolute values) of the exact sum (Accuracy and Stability of
    Numerical Algorithms, section 4.2)."""
    return n * U / (1 - n * U)


def float32_error_bounds(images, networks, eps) -> dict[str, np.ndarray]:
    """Per example, a first-order bound on how far each of the sampler's float32 values can be
    from the exact value of the same draws: every rounding site of the computation (the
    encoder's sums over 784 pixels, the decoder's sums over its hidden units, each activation,
    the sum of the 784 pixel terms of log p(x|z), the sums over the k samples) may be off by its
    own bound (a sum by gamma_n times the sum of its terms' absolute values, a function by a few
    units in the last place), and moves the value by that times its sensitivity, found by
    automatic differentiation of the same computation in float64. Two float32 computations that
    add in other orders (other kernels for other shapes, other vector instructions) are within
    the sum of their bounds of each other."""
    x = tf.constant(images, tf.float64)
    eps = tf.constant(np.asarray(eps), tf.float64)  # (k, N, L): the same bits in any layout
    k, n = eps.shape[0], x.shape[0]

    def dense(site, layer, h, name):
        kernel, bias = (tf.constant(w, tf.float64) for w in layer.get_weights())
        terms = tf.abs(h) @ tf.abs(kernel) + tf.abs(bias)
        a = site(name, h @ kernel + bias, gamma(kernel.shape[0] + 1) * terms)
        f = ACTIVATIONS[layer.get_config()["activation"]]
        return a if f is tf.identity else site(name + "/f", f(a), ULPS * U * tf.abs(f(a)))

    def forward(deltas):
        sizes = {}

        def site(name, value, size):
            sizes[name] = size
            return value + deltas[name] if deltas else value

        encoder, decoder = networks.inference_network, networks.generative_network
        h = x
        for layer in (layer for layer in encoder.layers if layer.name.startswith("hidden")):
            h = dense(site, layer, h, layer.name)
        loc = dense(site, encoder.get_layer("loc"), h, "loc")
        scale = dense(site, encoder.get_layer("scale"), h, "scale")
        z = site("z", loc + scale * eps, 2 * U * tf.abs(loc + scale * eps))  # (k, N, L)
        h = tf.reshape(z, [k * n, -1])
        for layer in decoder.layers[1:]:
            h = dense(site, layer, h, "decoder/" + layer.name)
        logits = tf.reshape(h, [k, n, -1])
        softplus = tf.nn.softplus(logits)
        terms = site("pixels", x * logits - softplus, ULPS * U * (tf.abs(x * logits) + softplus))
        log_px_given_z = tf.reduce_sum(terms, -1)
        log_px_given_z = site("sum", log_px_given_z, gamma(784) * tf.reduce_sum(tf.abs(terms), -1))
        two_pi = tf.constant(2 * math.pi, tf.float64)
        log_prior = tf.reduce_sum(-0.5 * z**2 - 0.5 * tf.math.log(two_pi), -1)
        log_q = tf.reduce_sum(-0.5 * eps**2 - tf.math.log(scale) - 0.5 * tf.math.log(two_pi), -1)
        parts = [log_px_given_z, log_prior, log_q]
        log_weights = site(
            "log_w", parts[0] + parts[1] - parts[2], gamma(4) * sum(tf.abs(p) for p in parts)
        )
        over_samples = gamma(k + 2 * math.ceil(k / importance_sampling.BLOCK))
        log_px = tf.reduce_logsumexp(log_weights, 0) - math.log(k)
        log_px = site("logsumexp", log_px, over_samples + 2 * ULPS * U * tf.abs(log_px))
        mean = tf.reduce_mean(log_px_given_z, 0)
        mean = site("mean", mean, over_samples * tf.reduce_mean(tf.abs(log_px_given_z), 0))
        kl_terms = [0.5 * loc**2, 0.5 * scale**2, 0.5 * tf.ones_like(loc), tf.math.log(scale)]
        kl = kl_terms[0] + kl_terms[1] - kl_terms[2] - kl_terms[3]
        kl = site(
            "kl", tf.reduce_sum(kl, -1), ULPS * U * tf.reduce_sum(sum(map(tf.abs, kl_terms)), -1)
        )
        spread = tf.math.reduce_std(log_px_given_z, 0) / math.sqrt(k)
        outputs = {
            "log_px": log_px,
            "expected_log_likelihood": mean,
            "kl": kl,
            "elbo": site("elbo", mean - kl, U * tf.abs(mean - kl)),
            "elbo_standard_error": site("spread", spread, over_samples * spread),
        }
        return outputs, sizes

    _, sizes = forward(None)
    deltas = {name: tf.zeros_like(size) for name, size in sizes.items()}
    bounds = {}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(list(deltas.values()))
        outputs, _ = forward(deltas)
        totals = {name: tf.reduce_sum(value) for name, value in outputs.items()}
    for name, value in totals.items():
        gradients = tape.gradient(value, deltas)
        total = np.zeros(n)
        for site, gradient in gradients.items():
            if gradient is not None:  # each example's value depends on its own sites only
                moved = (tf.abs(gradient) * sizes[site]).numpy()
                axis = 1 if moved.shape[0] == k and moved.ndim > 1 else 0
                total += np.moveaxis(moved, axis, 0).reshape(n, -1).sum(1)
        bounds[name] = total
    return bounds


def test_chunked_and_unchunked_give_the_same_numbers(one_dimensional_model):
    """The same draws in one tile per call, three, or all at once (``vae.bounds_per_example``)
    give the same numbers up to float32 rounding: within twice the arithmetic's error bound of
    each other, a bound far smaller than the Monte Carlo error that other draws would show."""
    images, networks, sampler = random_encoder_case(one_dimensional_model)
    eps = all_draws(sampler, len(images))
    bounds = float32_error_bounds(images, networks, eps)
    one_tile_per_call = sampler(images, tiles_per_call=1)
    all_at_once = sampler(images, tiles_per_call=3)
    # the test can still fail: other draws would move the ELBO by about its standard error
    assert np.all(2 * bounds["elbo"] < one_tile_per_call["elbo_standard_error"])
    for name, bound in bounds.items():
        difference = np.abs(one_tile_per_call[name] - all_at_once[name])
        np.testing.assert_array_less(difference, 2 * bound, err_msg=name)

    # the same draws, unchunked: every eps materialised, the bounds computed in one go
    direct = vae.bounds_per_example(images, networks, eps)
    for mine, theirs in (("iwae", "log_px"), ("elbo", "elbo")):
        difference = np.abs(direct[mine].numpy() - one_tile_per_call[theirs])
        np.testing.assert_array_less(difference, 2 * bounds[theirs], err_msg=mine)


def test_the_elbo_standard_error_is_the_spread_of_the_same_draws_in_float64(one_dimensional_model):
    """log p(x|z) is about -550 nats here and its sd about 5: E[t^2] - E[t]^2 in float32 was
    0.3 % off; the blockwise centred sums must agree with float64 to 1e-4."""
    images, networks, sampler = random_encoder_case(one_dimensional_model)
    values = sampler(images)
    eps = all_draws(sampler, len(images))
    z, log_q = vae.sample_and_log_prob(vae.approximate_posterior(networks, images), eps)
    _, log_px_given_z = vae.log_importance_weights(images, z, log_q, networks)
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
    total = float(tf.reduce_mean(vae.analytic_kl(q, networks)))
    assert after["kl"].sum() == pytest.approx(total, rel=1e-4)
