"""The model: shapes, the ELBO against a hand computation, analytic KL, the IWAE bound."""

import numpy as np
import tensorflow as tf

from stages import vae


def softplus(a):
    return np.logaddexp(0.0, a)


def normal_log_pdf(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


def networks(latent_dim=2, hidden=(8,), activation="tanh", seed=0):
    tf.keras.utils.set_random_seed(seed)
    return (
        vae.make_inference_network(latent_dim, list(hidden), activation),
        vae.make_generative_network(latent_dim, list(hidden), activation),
    )


def binary_images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 784)) < 0.2).astype(np.float32)


def test_shapes_and_dtypes():
    encoder, decoder = networks(latent_dim=3, hidden=(16, 8))
    x = binary_images(5)
    loc, scale = encoder(x)
    assert loc.shape == scale.shape == (5, 3) and loc.dtype == tf.float32
    assert np.all(scale.numpy() > 0)
    assert decoder(tf.zeros([5, 3])).shape == (5, 784)
    eps = tf.random.normal([4, 5, 3])
    z = vae.reparameterized_sample(vae.approximate_posterior(encoder, x), eps)
    assert z.shape == (4, 5, 3)
    assert vae.likelihood(decoder, z).log_prob(x).shape == (4, 5)
    terms = vae.bounds_per_example(x, encoder, decoder, eps)
    assert {k: v.shape for k, v in terms.items()} == {
        k: (5,) for k in ("expected_log_likelihood", "kl", "elbo", "iwae")
    }
    assert vae.latent_dim_of(decoder) == 3
    assert [layer.name for layer in decoder.layers][-1] == "logits"


def forward_numpy(network, inputs):
    """The Dense layers of a network by hand: tanh hidden layers, linear or softplus heads."""
    h = inputs
    weights = {layer.name: layer.get_weights() for layer in network.layers if layer.get_weights()}
    for name, (kernel, bias) in weights.items():
        if name.startswith("hidden"):
            h = np.tanh(h @ kernel + bias)
    return h, weights


def test_elbo_and_iwae_match_a_hand_computation():
    encoder, decoder = networks(latent_dim=2, hidden=(8,))
    x = binary_images(3, seed=1).astype(np.float64)
    eps = np.random.default_rng(2).standard_normal((5, 3, 2))

    h, w = forward_numpy(encoder, x)
    loc = h @ w["loc"][0] + w["loc"][1]
    scale = softplus(h @ w["scale"][0] + w["scale"][1])
    z = loc + scale * eps  # (5, 3, 2)
    g, wd = forward_numpy(decoder, z)
    logits = g @ wd["logits"][0] + wd["logits"][1]  # (5, 3, 784)
    log_px_given_z = np.sum(x * logits - softplus(logits), axis=-1)  # Bernoulli, summed over pixels
    kl = np.sum(0.5 * (scale**2 + loc**2 - 1) - np.log(scale), axis=-1)
    elbo = log_px_given_z.mean(axis=0) - kl
    log_w = log_px_given_z + normal_log_pdf(z, 0, 1).sum(-1) - normal_log_pdf(z, loc, scale).sum(-1)
    iwae = np.log(np.mean(np.exp(log_w - log_w.max(0)), axis=0)) + log_w.max(0)

    terms = vae.bounds_per_example(
        tf.constant(x, tf.float32), encoder, decoder, tf.constant(eps, tf.float32)
    )
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(terms["expected_log_likelihood"], log_px_given_z.mean(0), rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], elbo, rtol=1e-5)
    np.testing.assert_allclose(terms["iwae"], iwae, rtol=1e-5)


def test_analytic_kl_matches_monte_carlo():
    encoder, _ = networks(latent_dim=4, hidden=(8,), seed=3)
    x = binary_images(2, seed=4)
    q = vae.approximate_posterior(encoder, x)
    p = vae.prior(4)
    z = q.sample(200_000, seed=5)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).numpy()
    analytic = vae.tfd.kl_divergence(q, p).numpy()
    standard_error = log_ratio.std(axis=0) / np.sqrt(len(log_ratio))
    assert np.all(np.abs(log_ratio.mean(axis=0) - analytic) < 4 * standard_error)


def test_iwae_bound_is_at_least_the_elbo_on_the_same_samples():
    encoder, decoder = networks(latent_dim=2, hidden=(8,), seed=6)
    x = binary_images(50, seed=7)
    eps = tf.random.stateless_normal([20, 50, 2], seed=[1, 2])
    terms = vae.bounds_per_example(x, encoder, decoder, eps)
    q, p = vae.approximate_posterior(encoder, x), vae.prior(2)
    z = vae.reparameterized_sample(q, eps)
    log_w = vae.likelihood(decoder, z).log_prob(x) + p.log_prob(z) - q.log_prob(z)
    mc_elbo = tf.reduce_mean(log_w, axis=0)  # the same samples, Monte Carlo KL
    assert np.all(terms["iwae"].numpy() >= mc_elbo.numpy() - 1e-4)  # Jensen, example by example
    assert terms["iwae"].numpy().mean() > terms["elbo"].numpy().mean()
    one_sample = vae.bounds_per_example(x, encoder, decoder, eps[:1])
    np.testing.assert_allclose(one_sample["iwae"], log_w[0], rtol=1e-5)  # k = 1: log w itself


def test_random_draws_are_fixed_by_the_seed():
    a = vae.standard_normal([3, 4], tf.constant([1, 2], tf.int64))
    b = vae.standard_normal([3, 4], tf.constant([1, 2], tf.int64))
    c = vae.standard_normal([3, 4], tf.constant([1, 3], tf.int64))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    intensities = np.full((200, 784), 64, np.uint8)  # probability 64 / 255 ~ 0.251
    x = vae.bernoulli_pixels(intensities, tf.constant([0, 1], tf.int64)).numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 64 / 255) < 0.005
    assert not np.array_equal(x, vae.bernoulli_pixels(intensities, tf.constant([0, 2], tf.int64)))


def test_flops_count():
    counts = vae.flops_per_example(2, [256, 256])
    assert counts["decoder"] == 2 * (2 * 256 + 256 * 256 + 256 * 784)
    assert counts["forward"] == counts["encoder"] + counts["decoder"]
