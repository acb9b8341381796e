"""The model's equations: the ELBO and IWAE bound against a hand computation, analytic vs Monte
Carlo KL, Jensen's inequality, the one-softplus Bernoulli, the decoder's initial bias, gated
units, KL warm-up and the doubly reparameterized gradient estimator."""

import numpy as np
import pytest
import tensorflow as tf

from latent.data.binarization import binarize
from latent.model import vae
from latent.records import model_files


def softplus(a):
    return np.logaddexp(0.0, a)


def normal_log_pdf(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


def networks(
    latent_dim=2, hidden=(8,), activation="tanh", seed=0, posterior="gaussian", prior="standard"
):
    tf.keras.utils.set_random_seed(seed)
    return vae.make_networks(
        latent_dim, list(hidden), activation, posterior, 2, prior=prior, prior_components=3
    )


def binary_images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 784)) < 0.2).astype(np.float32)


def test_shapes_of_every_term():
    nets = networks(latent_dim=3, hidden=(16, 8))
    x = binary_images(5)
    loc, scale = nets.inference_network(x)
    assert loc.shape == scale.shape == (5, 3) and np.all(scale.numpy() > 0)
    z, log_q = vae.sample_and_log_prob(vae.approximate_posterior(nets, x), tf.zeros([4, 5, 3]))
    assert z.shape == (4, 5, 3) and log_q.shape == (4, 5)
    assert vae.likelihood(nets.generative_network, z).log_prob(x).shape == (4, 5)
    terms = vae.bounds_per_example(x, nets, tf.random.normal([4, 5, 3]))
    for name in ("expected_log_likelihood", "kl", "elbo", "iwae"):
        assert terms[name].shape == (5,), name
    assert nets.latent_dim == 3


def forward_numpy(network, inputs):
    """The Dense layers of a network by hand: tanh hidden layers, linear or softplus heads."""
    h = inputs
    weights = {layer.name: layer.get_weights() for layer in network.layers if layer.get_weights()}
    for name, (kernel, bias) in weights.items():
        if name.startswith("hidden"):
            h = np.tanh(h @ kernel + bias)
    return h, weights


def test_elbo_and_iwae_match_a_hand_computation():
    nets = networks(latent_dim=2, hidden=(8,))
    x = binary_images(3, seed=1).astype(np.float64)
    eps = np.random.default_rng(2).standard_normal((5, 3, 2))

    h, w = forward_numpy(nets.inference_network, x)
    loc = h @ w["loc"][0] + w["loc"][1]
    scale = softplus(h @ w["scale"][0] + w["scale"][1])
    z = loc + scale * eps  # (5, 3, 2)
    g, wd = forward_numpy(nets.generative_network, z)
    logits = g @ wd["logits"][0] + wd["logits"][1]  # (5, 3, 784)
    log_px_given_z = np.sum(x * logits - softplus(logits), axis=-1)  # Bernoulli, summed over pixels
    kl = np.sum(0.5 * (scale**2 + loc**2 - 1) - np.log(scale), axis=-1)
    elbo = log_px_given_z.mean(axis=0) - kl
    log_w = log_px_given_z + normal_log_pdf(z, 0, 1).sum(-1) - normal_log_pdf(z, loc, scale).sum(-1)
    iwae = np.log(np.mean(np.exp(log_w - log_w.max(0)), axis=0)) + log_w.max(0)

    terms = vae.bounds_per_example(tf.constant(x, tf.float32), nets, tf.constant(eps, tf.float32))
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(terms["expected_log_likelihood"], log_px_given_z.mean(0), rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], elbo, rtol=1e-5)
    np.testing.assert_allclose(terms["iwae"], iwae, rtol=1e-5)


def test_one_softplus_bernoulli_equals_tfps_on_binary_pixels():
    logits = tf.constant(np.random.default_rng(0).normal(0, 8, (50, 784)), tf.float32)
    x = binary_images(50)
    ours = vae.Bernoulli(logits=logits).log_prob(x)
    tfps = vae.tfd.Bernoulli(logits=logits).log_prob(x)
    np.testing.assert_allclose(ours, tfps, rtol=1e-6, atol=1e-5)
    assert ours.numpy().max() <= 0


def test_analytic_kl_matches_monte_carlo():
    nets = networks(latent_dim=4, hidden=(8,), seed=3)
    q = vae.approximate_posterior(nets, binary_images(2, seed=4))
    z = q.sample(200_000, seed=5)
    log_ratio = (q.log_prob(z) - vae.prior(nets).log_prob(z)).numpy()
    analytic = vae.analytic_kl(q, nets).numpy()
    standard_error = log_ratio.std(axis=0) / np.sqrt(len(log_ratio))
    assert np.all(np.abs(log_ratio.mean(axis=0) - analytic) < 4 * standard_error)


def test_iwae_bound_is_at_least_the_elbo_on_the_same_samples():
    nets = networks(latent_dim=2, hidden=(8,), seed=6)
    x = binary_images(50, seed=7)
    eps = tf.random.stateless_normal([20, 50, 2], seed=[1, 2])
    terms = vae.bounds_per_example(x, nets, eps)
    z, log_q = vae.sample_and_log_prob(vae.approximate_posterior(nets, x), eps)
    log_w, _ = vae.log_importance_weights(x, z, log_q, nets)
    mc_elbo = tf.reduce_mean(log_w, axis=0)  # the same samples, Monte Carlo KL
    assert np.all(terms["iwae"].numpy() >= mc_elbo.numpy() - 1e-4)  # Jensen, example by example
    assert terms["iwae"].numpy().mean() > terms["elbo"].numpy().mean()
    one_sample = vae.bounds_per_example(x, nets, eps[:1])
    np.testing.assert_allclose(one_sample["iwae"], log_w[0], rtol=1e-5)  # k = 1: log w itself


def test_kl_warmup_weights_only_the_kl_term():
    nets = networks(seed=8)
    x = binary_images(10, seed=9)
    eps = tf.random.stateless_normal([3, 10, 2], seed=[3, 4])
    full, half = (vae.bounds_per_example(x, nets, eps, kl_weight=w) for w in (1.0, 0.5))
    np.testing.assert_allclose(full["elbo_annealed"], full["elbo"])
    np.testing.assert_allclose(half["elbo"], full["elbo"])  # the reported ELBO is the true one
    np.testing.assert_allclose(
        half["elbo_annealed"], half["expected_log_likelihood"] - 0.5 * half["kl"], rtol=1e-6
    )
    model = vae.VariationalAutoencoder(nets, kl_warmup_steps=100)
    assert [float(model.kl_weight(s)) for s in (0, 50, 100, 400)] == [0.0, 0.5, 1.0, 1.0]


def test_decoder_starts_at_the_pixel_marginal():
    means = np.linspace(0.0, 1.0, 784)
    decoder = vae.make_generative_network(2, [8], "relu", pixel_means=means)
    bias = decoder.get_layer("logits").get_weights()[1]
    clipped = np.clip(means, 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(tf.sigmoid(bias), clipped, rtol=1e-5)


def test_gated_units_are_a_dense_layer_times_its_sigmoid_gate_in_stock_keras(tmp_path):
    """activation: gated is Tomczak & Welling's gated dense unit, (x W + b) * sigmoid(x V + c),
    made of stock Keras layers only, so that the saved network loads without this repository."""
    nets = networks(latent_dim=3, hidden=(6, 5), activation="gated")
    decoder = nets.generative_network
    z = np.random.default_rng(3).standard_normal((4, 3))
    h = z
    for i in range(2):
        w, b = decoder.get_layer(f"hidden_{i}").get_weights()
        v, c = decoder.get_layer(f"gate_{i}").get_weights()
        h = (h @ w + b) / (1 + np.exp(-(h @ v + c)))
    w, b = decoder.get_layer("logits").get_weights()
    np.testing.assert_allclose(decoder(z.astype(np.float32)), h @ w + b, rtol=1e-5, atol=1e-5)
    decoder.save(tmp_path / "decoder.keras")
    loaded = tf.keras.models.load_model(tmp_path / "decoder.keras")
    assert {type(layer).__module__.split(".")[0] for layer in loaded.layers} == {"keras"}
    np.testing.assert_array_equal(loaded(z.astype(np.float32)), decoder(z.astype(np.float32)))


def test_random_draws_are_fixed_by_the_seed():
    a = vae.standard_normal([3, 4], tf.constant([1, 2], tf.int64))
    b = vae.standard_normal([3, 4], tf.constant([1, 2], tf.int64))
    c = vae.standard_normal([3, 4], tf.constant([1, 3], tf.int64))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    intensities = np.full((200, 784), 64, np.uint8)  # probability 64 / 255 ~ 0.251
    x = binarize(intensities, tf.constant([0, 1], tf.int64)).numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 64 / 255) < 0.005
    assert not np.array_equal(x, binarize(intensities, tf.constant([0, 2], tf.int64)))


def objective_of(nets, x, eps, estimator, kl_weight):
    """The batch mean of the (annealed) IWAE bound, or DReG's surrogate for the inference
    network's gradient."""
    dreg = estimator == "dreg"
    terms = vae.bounds_per_example(x, nets, eps, kl_weight, q_parameters_fixed=dreg)
    if dreg:
        inference, _ = vae.dreg_surrogates(
            terms["log_weights_annealed"], kl_weight, terms["log_prior_direct"]
        )
        return tf.reduce_mean(inference)
    return tf.reduce_mean(terms["iwae_annealed"])


def gradient_draws(nets, x, k, estimator, kl_weight, draws):
    """``draws`` gradients of the encoder's (and the VampPrior's pseudo-inputs') weights, each
    from its own k draws of eps, in one traced graph."""
    encoder = nets.inference_network.trainable_weights
    if nets.pseudo_inputs is not None:
        encoder = encoder + nets.pseudo_inputs.trainable_weights

    @tf.function
    def one_draw(eps):
        with tf.GradientTape() as tape:
            objective = objective_of(nets, x, eps, estimator, kl_weight)
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(objective, encoder)], 0)

    eps = [
        tf.random.stateless_normal([k, len(x), nets.latent_dim], seed=[7, i]) for i in range(draws)
    ]
    return np.stack([one_draw(e).numpy() for e in eps])


@pytest.mark.parametrize("kl_weight, prior", [(1.0, "standard"), (0.3, "standard"), (0.3, "vamp")])
def test_dreg_has_the_same_bound_and_an_unbiased_gradient(kl_weight, prior):
    """With the VampPrior too: the pseudo-inputs and the encoder's part in p(z) get their IWAE
    gradient, the rest DReG's."""
    nets = networks(latent_dim=2, hidden=(16,), seed=10, prior=prior)
    x = binary_images(4, seed=11)
    same = tf.random.stateless_normal([10, 4, 2], seed=[5, 6])
    plain = vae.bounds_per_example(x, nets, same, kl_weight)
    fixed = vae.bounds_per_example(x, nets, same, kl_weight, q_parameters_fixed=True)
    np.testing.assert_allclose(plain["iwae_annealed"], fixed["iwae_annealed"], rtol=1e-6)
    reparameterized, dreg = (
        gradient_draws(nets, x, 10, estimator, kl_weight, draws=300)
        for estimator in ("reparameterized", "dreg")
    )
    # the two means agree within Monte Carlo error (pooled standard error, 5 sigma)
    error = np.sqrt((reparameterized.var(0) + dreg.var(0)) / len(dreg))
    assert np.all(np.abs(reparameterized.mean(0) - dreg.mean(0)) <= 5 * error + 1e-6)


def test_dreg_training_step_updates_the_pseudo_inputs_too():
    nets = networks(latent_dim=2, hidden=(16,), seed=12, prior="vamp")
    model = vae.VariationalAutoencoder(nets, train_samples=5, gradient_estimator="dreg")
    gradients, variables, _ = model._gradients(binary_images(4, seed=13), tf.constant(0))
    trained = {id(v) for v in variables}
    assert trained == {id(v) for v in model.trainable_weights}  # pseudo-inputs included
    assert all(np.any(g.numpy() != 0) for g in gradients)


def test_dreg_lowers_the_gradient_variance_on_a_trained_model(trained_workspace):
    nets = model_files.load_networks(trained_workspace / "models")
    x = np.load(trained_workspace / "data/prepared/test_images.npy")[:4].astype(np.float32)
    reparameterized, dreg = (
        gradient_draws(nets, x, 10, estimator, 1.0, draws=100)
        for estimator in ("reparameterized", "dreg")
    )
    ratio = dreg.var(0).sum() / reparameterized.var(0).sum()  # total over the encoder's weights
    print(f"DReG / reparameterized variance of the encoder's gradient, k = 10: {ratio:.3f}")
    assert ratio < 0.5
