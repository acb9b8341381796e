"""The prior p(z): the VampPrior's mixture density against a hand computation; one component at
an encoder output of (0, 1) is the standard normal; the training gradient reaches the
pseudo-inputs; they save and load with the networks; and a ``prior: vamp`` model trained by the
train stage passes the estimators' checks (ELBO <= IS, IS rising with k, AIS from the prior and
BDMC around the exact log p(x) by quadrature) and goes through the evaluate and figures stages."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from latent.estimators import ais
from latent.estimators.importance_sampling import ImportanceSampler
from latent.estimators.quadrature import grid_posterior
from latent.model import prior, vae
from latent.records import model_files
from stages import evaluate, figures
from tests.conftest import chdir, make_workspace

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def log_normal(z, loc, scale):
    """log N(z; loc, scale^2) per coordinate, in float64."""
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)


def test_the_mixture_density_is_the_mean_of_its_gaussians():
    """log p(z) = log (1/K) sum_k N(z; loc_k, scale_k^2), computed in float64 by hand. The
    float32 evaluation expands each component's sum_l (z_l - loc_kl)^2 / scale_kl^2 into three
    sums of L terms (``prior.GaussianMixture``), each rounded by at most (L + 3) eps/2 of the sum
    of their magnitudes M_k; log-sum-exp passes on each component's error times its share w_k of
    the density, so the error is below sum_k w_k (L + 3) eps M_k / 2 plus a few eps of log p(z)."""
    rng = np.random.default_rng(0)
    components, latent_dim = 5, 3
    loc = rng.normal(size=(components, latent_dim)).astype(np.float32)
    scale = rng.uniform(0.03, 2.0, size=(components, latent_dim)).astype(np.float32)
    z = (2 * rng.normal(size=(7, latent_dim))).astype(np.float32)
    z64 = z.astype(np.float64)[:, None, :]  # (7, 1, L) against the components (K, L)
    loc64, scale64 = loc.astype(np.float64), scale.astype(np.float64)
    terms = log_normal(z64, loc64, scale64).sum(-1)  # (7, K)
    expected = np.logaddexp.reduce(terms, axis=1) - math.log(components)
    shares = np.exp(terms - np.logaddexp.reduce(terms, axis=1, keepdims=True))
    magnitudes = ((z64**2 + 2 * np.abs(z64 * loc64) + loc64**2) / scale64**2).sum(-1)
    bound = (latent_dim + 3) * FLOAT32_EPS / 2 * (shares * magnitudes).sum(-1)
    bound += 8 * FLOAT32_EPS * np.abs(expected)
    p = prior.mixture_prior(tf.constant(loc), tf.constant(scale))
    np.testing.assert_array_less(np.abs(p.log_prob(z).numpy() - expected), bound)
    tfp_mixture = prior.tfd.MixtureSameFamily(p.mixture_distribution, p.components_distribution)
    np.testing.assert_allclose(p.log_prob(z), tfp_mixture.log_prob(z), rtol=0, atol=bound.max())


def one_component_at_the_standard_normal(latent_dim=3):
    """A VampPrior with K = 1 whose encoder maps every image to loc 0, scale 1."""
    keras.utils.set_random_seed(0)
    networks = vae.make_networks(latent_dim, [16], "relu", "gaussian", 0, None, "vamp", 1)
    encoder = networks.inference_network
    for name, bias in (("loc", 0.0), ("scale", math.log(math.e - 1))):  # softplus(bias) = 1
        layer = encoder.get_layer(name)
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(np.full(layer.bias.shape, bias, np.float32))
    return networks


def test_one_component_whose_encoder_output_is_0_1_is_the_standard_normal():
    """The scale is softplus(log(e - 1)) = 1 up to float32 rounding (a few eps), so each log
    density differs by at most a few eps times (z^2 + 1) per dimension."""
    networks = one_component_at_the_standard_normal()
    z = tf.constant(np.random.default_rng(1).normal(size=(4, 6, 3)), tf.float32)
    vamp = vae.prior(networks).log_prob(z).numpy()
    standard = prior.standard_normal_prior(3).log_prob(z).numpy()
    bound = 8 * FLOAT32_EPS * (np.square(z.numpy()).sum(-1) + 3)
    np.testing.assert_array_less(np.abs(vamp - standard), bound)
    np.testing.assert_array_equal(
        vae.prior(one_component_at_the_standard_normal(2)).mean(), np.zeros(2, np.float32)
    )


def test_the_gradient_of_the_bound_reaches_the_pseudo_inputs():
    keras.utils.set_random_seed(0)
    networks = vae.make_networks(2, [16], "relu", "gaussian", 0, None, "vamp", 4)
    model = vae.VariationalAutoencoder(networks, train_samples=3)
    assert networks.pseudo_inputs.free.path in [w.path for w in model.trainable_weights]
    x = tf.constant((np.random.default_rng(2).random((8, 784)) < 0.3).astype(np.float32))
    eps = vae.standard_normal([3, 8, 2], [1, 2])
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(vae.bounds_per_example(x, networks, eps)["iwae"])
    gradient = tape.gradient(loss, networks.pseudo_inputs.free).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    assert np.all(np.abs(gradient).max(axis=1) > 0)  # every component's pseudo-input


def test_the_pseudo_inputs_save_and_load_with_the_networks(tmp_path):
    keras.utils.set_random_seed(0)
    networks = vae.make_networks(2, [16], "relu", "iaf", 2, None, "vamp", 5)
    model_files.save_networks(networks, tmp_path)
    loaded = model_files.load_networks(tmp_path)
    assert (tmp_path / model_files.PSEUDO_INPUTS_FILE).exists()
    np.testing.assert_array_equal(loaded.pseudo_inputs(), networks.pseudo_inputs())
    u = keras.saving.load_model(tmp_path / model_files.PSEUDO_INPUTS_FILE)()  # the plain way
    assert u.shape == (5, 784) and np.all((u >= 0) & (u <= 1))
    z = vae.standard_normal([6, 2], [3, 4])
    np.testing.assert_array_equal(vae.prior(loaded).log_prob(z), vae.prior(networks).log_prob(z))


@pytest.fixture(scope="module")
def vamp_workspace(tmp_path_factory):
    """A prior: vamp model (latent 2, 10 pseudo-inputs) trained by the train stage, and 16 of
    its test images."""
    workspace = make_workspace(
        tmp_path_factory.mktemp("vamp"), epochs=5, prior="vamp", prior_components=10
    )
    networks = model_files.load_networks(workspace / "models")
    images = np.load(workspace / "data/prepared/test_images.npy")[:16].astype(np.float32)
    return workspace, networks, images


def test_a_vamp_model_trains_and_its_bounds_order(vamp_workspace):
    _, networks, images = vamp_workspace
    assert not networks.has_standard_prior and networks.pseudo_inputs.components == 10
    estimates = [ImportanceSampler(networks, k, seed=0)(images) for k in (1, 10, 1000)]
    means = [e["log_px"].mean() for e in estimates]
    assert means[0] < means[1] < means[2]
    elbo = estimates[-1]["elbo"]
    assert np.all(elbo <= estimates[-1]["log_px"])  # k = 1000: the bound is far above the ELBO
    assert np.all(estimates[-1]["kl"] > 0)  # Monte Carlo KL of q(z|x) from the mixture


def within(differences: np.ndarray) -> float:
    """Three standard errors of the mean of per-image differences: the Monte Carlo tolerance."""
    return 3 * differences.std(ddof=1) / math.sqrt(len(differences))


def test_ais_from_the_learned_prior_and_bdmc_sandwich_the_exact_log_px(vamp_workspace):
    """On images simulated from the model (z ~ the mixture, x ~ p(x|z)), forward AIS from the
    VampPrior (chains that move in z) bounds log p(x) from below, reverse AIS from the z that
    made each image from above, each within Monte Carlo error of quadrature's exact value, and
    the sandwich narrows with more steps."""
    _, networks, _ = vamp_workspace
    x, z = ais.simulate(networks, 16, seed=0)
    estimator = ais.AnnealedImportanceSampler(networks, 16, 10, "sigmoid", seed=0, initial="prior")
    exact = np.array([grid_posterior(networks, image).log_px for image in x])
    gaps = []
    for steps in (3, 100):
        below = estimator(x, steps)["log_px"] - exact
        above = estimator.reverse(x, z, steps)["log_px"] - exact
        assert below.mean() <= within(below) and above.mean() >= -within(above)
        gaps.append(np.mean(above - below))
    assert 0 < gaps[1] < gaps[0] and gaps[1] < 0.2


def test_the_evaluate_and_figures_stages_run_on_a_vamp_model(vamp_workspace):
    workspace, _, _ = vamp_workspace
    with chdir(workspace):
        evaluate.main()
        figures.main()
    metrics = json.loads((workspace / "metrics/evaluate.json").read_text())
    assert metrics["test_elbo"] <= metrics["test_log_px"] < 0
    assert (workspace / "figures/prior_samples.png").stat().st_size > 10_000
