"""The variational autoencoder of Jaan Altosaar's post "What is a variational autoencoder?"
(https://jaan.io/what-is-variational-autoencoder-vae-tutorial/), in both of its languages.

    probability model                                      neural-net language
    prior             p(z)   = N(0, I), or (prior: vamp)     the part of the loss the encoder is
                      a mixture of q(z|u_k) at learned       pulled towards (``latent.model.prior``)
                      pseudo-inputs u_k
    likelihood        p(x|z) = Bernoulli(logits = g(z))     decoder g = generative network
    approx. posterior q(z|x) = N(loc(x), scale(x))          encoder   = inference network
                      (posterior: iaf) that Gaussian pushed through an inverse autoregressive flow

The post's equations, each one function here:

    prior(nets)                       p(z)
    likelihood(g, z)                  p(x|z), 784 Bernoulli pixels
    approximate_posterior(nets, x)    q(z|x)
    sample_and_log_prob(q, eps)       z ~ q(z|x), reparameterized (z = loc + scale * eps, then the
                                      flow), and log q(z|x) of those z
    log_importance_weights(x, z, ..)  log w = log p(x|z) + log p(z) - log q(z|x)
    elbo(...)                         ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))
    iwae_bound(log w)                 log (1/k) sum_k w_k: the IWAE bound (Burda et al.) and the
                                      importance-sampled estimate of log p(x)
    annealed_log_density(..., beta)   q(z|x)^(1-beta) p(x,z)^beta, annealed importance sampling's
                                      path from q(z|x) to p(z|x)

The inference and generative networks are plain Keras 3 models of Dense layers (and Multiply
layers for ``activation: gated``), so their .keras files load with ``keras.saving.load_model``
and nothing from this repository; the flow's networks and the VampPrior's pseudo-inputs need
``import latent.model.flow`` and ``latent.model.prior`` (``latent.records.model_files`` saves
and loads them). The distributions are TensorFlow Probability's (``tfd``, ``tfb``).

Every value named ``*_per_example`` or returned per example is in nats for each example (summed
over pixels and latent dimensions); losses are batch means of those.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from latent.data.datasets import PIXELS
from latent.model.flow import GATED, PosteriorFlow
from latent.model.prior import PseudoInputs, mixture_prior, standard_normal_prior
from latent.plumbing import streams

tfd = tfp.distributions


# --- the networks ---------------------------------------------------------------------------


@dataclass(eq=False)  # compared and hashed by identity (quadrature caches compiled functions)
class Networks:
    """The inference network (encoder), the generative network (decoder), for the flow
    posterior the flow's networks (None for the mean-field Gaussian) and, for the VampPrior, its
    pseudo-inputs (None for the standard normal prior)."""

    inference_network: keras.Model
    generative_network: keras.Model
    flow: PosteriorFlow | None = None
    pseudo_inputs: PseudoInputs | None = None

    @property
    def latent_dim(self) -> int:
        return int(self.generative_network.inputs[0].shape[-1])

    @property
    def has_standard_prior(self) -> bool:
        """Whether p(z) is N(0, I) (else the VampPrior)."""
        return self.pseudo_inputs is None

    @property
    def has_flow(self) -> bool:
        """Whether q(z|x) is a flow (a flow of 0 steps is the Gaussian itself)."""
        return self.flow is not None and self.flow.steps > 0


def hidden_layer(h, units: int, activation: str, i: int):
    """Hidden layer ``i``: Dense ``hidden_i`` with the activation, or for "gated" the gated
    linear unit of Tomczak & Welling's VampPrior code (Dauphin et al. 2017), (h W + b) *
    sigmoid(h V + c): Dense ``hidden_i`` (linear) times Dense ``gate_i`` (sigmoid), joined by a
    Multiply ``gated_i``. Keras has the ``glu`` activation but no layer that halves a Dense
    layer's width; stock layers keep the networks' files loadable with nothing from here."""
    if activation != GATED:
        return keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    value = keras.layers.Dense(units, name=f"hidden_{i}")(h)
    gate = keras.layers.Dense(units, activation="sigmoid", name=f"gate_{i}")(h)
    return keras.layers.Multiply(name=f"gated_{i}")([value, gate])


def make_inference_network(
    latent_dim: int, hidden_units: list[int], activation: str, context_units: int = 0
):
    """Encoder: x (N, 784) in {0, 1} -> [loc (N, L), scale (N, L) > 0] of the Gaussian q(z|x),
    and with ``context_units`` a context h (N, H) for the flow's steps."""
    x = keras.Input((PIXELS,), name="x")
    h = x
    for i, units in enumerate(hidden_units):
        h = hidden_layer(h, units, activation, i)
    outputs = [
        keras.layers.Dense(latent_dim, name="loc")(h),
        keras.layers.Dense(latent_dim, activation="softplus", name="scale")(h),
    ]
    if context_units:
        outputs.append(keras.layers.Dense(context_units, name="context")(h))
    return keras.Model(x, outputs, name="inference_network")


def make_generative_network(
    latent_dim: int, hidden_units: list[int], activation: str, pixel_means: np.ndarray | None = None
):
    """Decoder: z (N, L) -> the 784 Bernoulli logits of p(x|z); hidden layers mirror the encoder's.

    ``pixel_means`` (784,) of the training images, when given, set the output bias to their logits
    (clipped to [1e-3, 1 - 1e-3]): before training p(x|z) is then the pixel-wise marginal.
    """
    z = keras.Input((latent_dim,), name="z")
    h = z
    for i, units in enumerate(reversed(hidden_units)):
        h = hidden_layer(h, units, activation, i)
    bias = "zeros"
    if pixel_means is not None:
        p = np.clip(np.asarray(pixel_means, np.float64), 1e-3, 1 - 1e-3)
        bias = keras.initializers.Constant(np.log(p / (1 - p)).astype(np.float32))
    logits = keras.layers.Dense(PIXELS, bias_initializer=bias, name="logits")(h)
    return keras.Model(z, logits, name="generative_network")


def make_networks(
    latent_dim: int,
    hidden_units: list[int],
    activation: str,
    posterior: str,
    flow_steps: int,
    pixel_means: np.ndarray | None = None,
    prior: str = "standard",
    prior_components: int = 1,
) -> Networks:
    """The networks of a fresh model; ``posterior`` is "gaussian" or "iaf" (with ``flow_steps``),
    ``prior`` "standard" or "vamp" (with ``prior_components`` pseudo-inputs). The flow is made
    only for "iaf", after the encoder and decoder, and the pseudo-inputs only for "vamp", last,
    so that the other networks' initial weights do not depend on those choices."""
    iaf = posterior == "iaf"
    context_units = latent_dim if iaf else 0
    inference_network = make_inference_network(latent_dim, hidden_units, activation, context_units)
    generative_network = make_generative_network(latent_dim, hidden_units, activation, pixel_means)
    flow = PosteriorFlow(latent_dim, flow_steps, latent_dim, activation=activation) if iaf else None
    pseudo_inputs = PseudoInputs(prior_components) if prior == "vamp" else None
    return Networks(inference_network, generative_network, flow, pseudo_inputs)


# --- the distributions ----------------------------------------------------------------------


class Bernoulli(tfd.Bernoulli):
    """``tfd.Bernoulli`` whose log_prob of x in {0, 1} is x * logits - softplus(logits), with
    softplus(l) = max(l, 0) + log(1 + exp(-|l|)): one exp and one log per pixel, where TFP's
    takes two softplus (each an exp and a log1p). The plain log is XLA's fast vectorized one;
    it differs from log1p by less than 6e-8 nats per pixel (1 + exp(-|l|) rounded)."""

    def _log_prob(self, x):
        logits = self._logits_parameter_no_checks()
        softplus = tf.maximum(logits, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
        return tf.cast(x, logits.dtype) * logits - softplus


def prior(networks: Networks):
    """p(z): N(0, I), or the VampPrior, the mixture of the encoder's Gaussians (a flow's base
    Gaussians) at the pseudo-inputs (``latent.model.prior``)."""
    if networks.has_standard_prior:
        return standard_normal_prior(networks.latent_dim)
    loc, scale = networks.inference_network(networks.pseudo_inputs())[:2]
    return mixture_prior(loc, scale)


def prior_sample(networks: Networks, eps, component_key):
    """z ~ p(z) from eps ~ N(0, I) (..., L): eps itself for N(0, I); for the VampPrior, for each
    z a component k drawn uniformly (stateless, from ``component_key``) and loc_k + scale_k * eps
    of its Gaussian."""
    if networks.has_standard_prior:
        return eps
    gaussians = prior(networks).components_distribution.distribution
    components = tf.shape(gaussians.loc)[0]
    chosen = tf.random.stateless_uniform(
        tf.shape(eps)[:-1], component_key, 0, components, tf.int32, alg=streams.ALGORITHM
    )
    return tf.gather(gaussians.loc, chosen) + tf.gather(gaussians.scale, chosen) * eps


def likelihood(generative_network, z):
    """p(x|z): 784 independent Bernoulli pixels; z may carry leading sample dims, (..., L)."""
    flat = tf.reshape(z, [-1, z.shape[-1]])
    logits = generative_network(flat)
    logits = tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [PIXELS]], axis=0))
    return tfd.Independent(Bernoulli(logits=logits), 1, name="likelihood")


def posterior_from_parameters(loc, scale, context=None, flow: PosteriorFlow | None = None):
    """q(z|x) from its per-example parameters: the diagonal Gaussian N(loc, scale^2), or that
    Gaussian pushed through the flow's steps given the context (a flow of 0 steps is the Gaussian
    itself)."""
    gaussian = tfd.Independent(tfd.Normal(loc=loc, scale=scale), 1, name="gaussian_posterior")
    if flow is None or flow.steps == 0:  # (Networks.has_flow)
        return gaussian
    return tfd.TransformedDistribution(gaussian, flow.bijector(context), name="flow_posterior")


def approximate_posterior(networks: Networks, x):
    """q(z|x): the inference network computes its parameters from x (amortized inference)."""
    return posterior_from_parameters(*networks.inference_network(x), flow=networks.flow)


def sample_and_log_prob(q, eps):
    """z ~ q(z|x) as a differentiable function of eps ~ N(0, I) (k, N, L), and log q(z|x) (k, N).

    The Gaussian: z = loc + scale * eps. The flow: those z pushed forward, and log q from the
    forward pass, log q(z_T|x) = log q(z_0|x) - log |det dz_T/dz_0|, with no inverse pass. The
    noise is drawn by the caller (``standard_normal``), keyed by a stateless seed.
    """
    if isinstance(q, tfd.Independent):  # the Gaussian
        normal = q.distribution
        z = normal.loc + normal.scale * eps
        return z, q.log_prob(z)
    z0, log_q0 = sample_and_log_prob(q.distribution, eps)  # the flow's base Gaussian
    return q.bijector.forward(z0), log_q0 - q.bijector.forward_log_det_jacobian(z0, 1)


def with_parameters_stopped(q):
    """The same Gaussian q with no gradient through its parameters (for DReG's log q(z|x))."""
    gaussian = q.distribution
    return tfd.Independent(
        tfd.Normal(tf.stop_gradient(gaussian.loc), tf.stop_gradient(gaussian.scale)), 1
    )


def prior_with_parameters_stopped(networks: Networks, p_z):
    """p(z) with no gradient through its parameters: N(0, I) itself, or the VampPrior's mixture
    of its Gaussians' loc and scale held fixed (for DReG's path through z)."""
    if networks.has_standard_prior:
        return p_z
    gaussians = p_z.components_distribution.distribution
    return mixture_prior(tf.stop_gradient(gaussians.loc), tf.stop_gradient(gaussians.scale))


MEAN_SAMPLES = 64  # samples behind a Monte Carlo posterior mean (the flow)


def mean_samples(networks: Networks) -> int:
    """How many samples ``posterior_means`` averages: 0 where the mean is exact (the Gaussian),
    else MEAN_SAMPLES (the flow, whose mean has no closed form)."""
    return MEAN_SAMPLES if networks.has_flow else 0


def posterior_means(networks: Networks, images: np.ndarray, seed: int) -> np.ndarray:
    """E_q[z|x] (N, L) of images (N, 784) in {0, 1}: the Gaussian's loc, a flow's the mean of
    MEAN_SAMPLES draws of fixed noise (key ``posterior_means`` of ``seed``)."""
    q = approximate_posterior(networks, tf.constant(images, tf.float32))
    if not networks.has_flow:
        return np.asarray(q.mean())
    shape = [MEAN_SAMPLES, len(images), networks.latent_dim]
    eps = standard_normal(shape, streams.key("posterior_means", seed))
    return np.asarray(tf.reduce_mean(sample_and_log_prob(q, eps)[0], axis=0))


# --- the bounds -----------------------------------------------------------------------------


def log_importance_weights(x, z, log_q, networks: Networks, log_pz=None):
    """log w = log p(x|z) + log p(z) - log q(z|x) for each sample and example (k, N), and the
    log p(x|z) term alone (the ELBO's expected log-likelihood averages it). ``log_pz`` (k, N)
    is log p(z) when already computed."""
    log_px_given_z = likelihood(networks.generative_network, z).log_prob(x)
    if log_pz is None:
        log_pz = prior(networks).log_prob(z)
    return log_px_given_z + log_pz - log_q, log_px_given_z


def analytic_kl(q, networks: Networks):
    """KL(q(z|x) || p(z)) per example where TFP knows it (a Gaussian q and the standard normal
    prior), else None (the flow, the VampPrior: Monte Carlo, see ``elbo``)."""
    if not networks.has_standard_prior:
        return None
    try:
        return tfd.kl_divergence(q, prior(networks))
    except NotImplementedError:
        return None


def kl_per_dimension(q):
    """KL(q(z_u|x) || N(0, 1)) for each example and latent dimension (N, L) of the mean-field
    Gaussian q (their sum over u is ``analytic_kl``)."""
    gaussian = q.distribution
    return tfd.kl_divergence(gaussian, tfd.Normal(tf.zeros_like(gaussian.loc), 1.0))


def elbo(log_px_given_z, log_weights, q, networks: Networks):
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) per example, from k samples (k, N).

    E_q[log p(x|z)] is the Monte Carlo mean of log p(x|z). The KL is analytic for the Gaussian
    posterior and the standard normal prior; for the flow or the VampPrior it is Monte Carlo
    too, KL ~= mean_k [log q(z_k|x) - log p(z_k)] = mean log p(x|z) - mean log w. Returns (elbo,
    expected_log_likelihood, kl), each (N,).
    """
    expected_log_likelihood = tf.reduce_mean(log_px_given_z, axis=0)
    kl = analytic_kl(q, networks)
    if kl is None:
        kl = expected_log_likelihood - tf.reduce_mean(log_weights, axis=0)
    return expected_log_likelihood - kl, expected_log_likelihood, kl


def iwae_bound(log_weights):
    """log (1/k) sum_k w_k per example, by log-sum-exp over the k samples (axis 0)."""
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


def bounds_per_example(x, networks: Networks, eps, kl_weight=1.0, q_parameters_fixed=False):
    """The bounds of log p(x) for each example from the k samples that eps (k, N, L) gives.

    Returns nats per example, (N,): expected_log_likelihood, kl, elbo, iwae, and the training
    objectives elbo_annealed = E_q[log p(x|z)] - beta KL and iwae_annealed, the IWAE bound of the
    annealed weights log p(x|z) + beta [log p(z) - log q(z|x)] (k, N, also returned as
    log_weights_annealed); they equal elbo and iwae when beta = kl_weight = 1.
    With ``q_parameters_fixed`` (DReG), log q(z|x) and log p(z) in the weights carry gradients
    through z only, and ``log_prior_direct`` (k, N) is log p(z) with gradients through the
    prior's parameters only (the VampPrior's encoder outputs at its pseudo-inputs; none for
    N(0, I)): the values are the same.
    """
    q = approximate_posterior(networks, x)
    z, log_q = sample_and_log_prob(q, eps)
    log_pz, direct = None, {}
    if q_parameters_fixed:
        log_q = with_parameters_stopped(q).log_prob(z)
        p_z = prior(networks)
        log_pz = prior_with_parameters_stopped(networks, p_z).log_prob(z)
        direct = {"log_prior_direct": p_z.log_prob(tf.stop_gradient(z))}
    log_weights, log_px_given_z = log_importance_weights(x, z, log_q, networks, log_pz)
    value, expected_log_likelihood, kl = elbo(log_px_given_z, log_weights, q, networks)
    annealed = log_px_given_z + kl_weight * (log_weights - log_px_given_z)
    return {
        "expected_log_likelihood": expected_log_likelihood,
        "kl": kl,
        "elbo": value,
        "iwae": iwae_bound(log_weights),
        "elbo_annealed": expected_log_likelihood - kl_weight * kl,
        "iwae_annealed": iwae_bound(annealed),
        "log_weights_annealed": annealed,
        **direct,
    }


def annealed_log_density(x, q, eps, beta, networks: Networks):
    """log f_beta of annealed importance sampling (Neal 2001; Wu et al. 2017) from q to the
    posterior, written in q's noise eps (k, N, L), unnormalized, (k, N):

        f_beta(z) = q(z|x)^(1 - beta) p(x, z)^beta = q(z|x) w(z)^beta,   w = p(x, z) / q(z|x)

    and z = the reparameterization of eps (``sample_and_log_prob``), whose Jacobian turns q(z|x)
    into N(eps; 0, I): log f_beta(eps) = log N(eps; 0, I) + beta log w. beta = 0 is q (normalized),
    beta = 1 the posterior times p(x); a q of the prior, N(0, I), makes log w = log p(x|z).
    The VampPrior as q (``prior(networks)``, a mixture, which has no reparameterization) makes
    the state z itself: log f_beta(z) = log p(z) + beta log p(x|z). Returns (log f_beta, log w).
    """
    if isinstance(q, tfd.MixtureSameFamily):
        log_px_given_z = likelihood(networks.generative_network, eps).log_prob(x)
        return q.log_prob(eps) + tf.cast(
            beta, log_px_given_z.dtype
        ) * log_px_given_z, log_px_given_z
    z, log_q = sample_and_log_prob(q, eps)
    log_weights, _ = log_importance_weights(x, z, log_q, networks)
    log_noise = tf.reduce_sum(-0.5 * tf.square(eps) - 0.5 * np.log(2 * np.pi), axis=-1)
    return log_noise + tf.cast(beta, log_weights.dtype) * log_weights, log_weights


def dreg_surrogates(log_weights, kl_weight=1.0, log_prior_direct=None):
    """Doubly reparameterized gradients of the IWAE bound (Tucker et al. 2018), as two surrogate
    objectives (N,) whose gradients are the estimator (their values are not the bound):

      inference network:  sum_k stop(w~_k^2) log w_k  +  sum_k stop(w~_k) log p(z_k)
      generative network: sum_k stop(w~_k) log w_k    (the usual IWAE gradient)

    where w~ = w / sum_k w are the normalized importance weights and log w_k (k, N) was computed
    with q's and p(z)'s parameters held fixed (``bounds_per_example(q_parameters_fixed=True)``),
    so that the first term's gradient flows through z_k only. The second term, with z_k held
    fixed (``log_prior_direct``), is the plain IWAE gradient of the prior's own parameters: for
    the VampPrior, the encoder's outputs at the pseudo-inputs and the pseudo-inputs themselves,
    which DReG's rewriting of q's score term leaves as they are; N(0, I) has none. With the KL
    warm-up's weight beta < 1 on log p(z) - log q(z|x), the score term that DReG rewrites
    carries beta too, the first coefficient becomes (1 - beta) w~_k + beta w~_k^2, and the
    second term carries beta.
    """
    normalized = tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))
    coefficient = (1.0 - kl_weight) * normalized + kl_weight * tf.square(normalized)
    inference = tf.reduce_sum(tf.stop_gradient(coefficient) * log_weights, axis=0)
    if log_prior_direct is not None:
        inference += kl_weight * tf.reduce_sum(normalized * log_prior_direct, axis=0)
    generative = tf.reduce_sum(normalized * log_weights, axis=0)
    return inference, generative


def standard_normal(shape, seed):
    """eps ~ N(0, I) from a stateless seed (2 integers): the same seed gives the same eps."""
    return tf.random.stateless_normal(shape, seed=seed, alg=streams.ALGORITHM)


# --- training -------------------------------------------------------------------------------


class VariationalAutoencoder(keras.Model):
    """Trains the networks together, as in the keras-io VAE example: loss = -mean(objective) with
    objective the ELBO (train_samples = 1) or the IWAE bound (k = train_samples > 1), metric
    trackers, and ``train_step``/``test_step`` so that ``fit``, its callbacks and validation work
    as usual. Images arrive binarized (the input pipeline draws dynamic binarization).

    A training batch is either one minibatch (B, 784) or a stack of minibatches (S, B, 784); a
    stack is trained as S optimizer steps inside one compiled call, which removes the per-call
    overhead that otherwise dominates small models. The random draws of step t depend only on
    (seed, t), and the KL weight (warm-up) only on t, so the result is the same whatever S is,
    and a run resumed from a saved optimizer state continues exactly as it would have.
    """

    def __init__(
        self,
        networks: Networks,
        train_samples=1,
        seed=0,
        kl_warmup_steps=0,
        gradient_estimator="reparameterized",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.networks = networks
        self.inference_network = networks.inference_network  # attributes: Keras tracks the
        self.generative_network = networks.generative_network  # networks' variables through them
        self.posterior_flow = networks.flow
        self.pseudo_inputs = networks.pseudo_inputs
        self.train_samples = int(train_samples)
        self.seed = int(seed)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.gradient_estimator = gradient_estimator
        self.objective_name = "elbo" if self.train_samples == 1 else "iwae"
        names = ["elbo", "expected_log_likelihood", "kl"]
        if self.train_samples > 1:
            names.append("iwae")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, x):
        """The parameters of q(z|x) for each example (the inference network's outputs)."""
        return self.inference_network(x)

    def _noise_key(self, step):
        """The key of optimizer step ``step``'s eps (distinct per replica)."""
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
        counter = tf.cast(step, tf.int64) * replicas + replica
        return streams.key("training_noise", self.seed, counter)

    def kl_weight(self, step):
        """beta of the KL warm-up: rising linearly from 0 to 1 over kl_warmup_steps, then 1."""
        if self.kl_warmup_steps == 0:
            return tf.constant(1.0)
        return tf.minimum(1.0, tf.cast(step, tf.float32) / self.kl_warmup_steps)

    def _eps(self, x, seed):
        return standard_normal([self.train_samples, tf.shape(x)[0], self.networks.latent_dim], seed)

    def _track(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])

    def _gradients(self, x, step):
        """(gradients, variables, terms) of one minibatch's loss = -mean(objective)."""
        eps = self._eps(x, self._noise_key(step))
        dreg = self.gradient_estimator == "dreg"
        # gradients are summed over replicas: scale so that the step is the global mean's
        scale = 1.0 / tf.distribute.get_strategy().num_replicas_in_sync
        kl_weight = self.kl_weight(step)
        with tf.GradientTape(persistent=dreg) as tape:
            terms = bounds_per_example(x, self.networks, eps, kl_weight, dreg)
            loss = -tf.reduce_mean(terms[f"{self.objective_name}_annealed"]) * scale
            if dreg:
                inference, generative = dreg_surrogates(
                    terms["log_weights_annealed"], kl_weight, terms["log_prior_direct"]
                )
                inference_loss = -tf.reduce_mean(inference) * scale
                generative_loss = -tf.reduce_mean(generative) * scale
        if not dreg:
            return tape.gradient(loss, self.trainable_weights), self.trainable_weights, terms
        inference_variables = self.inference_network.trainable_weights
        if self.pseudo_inputs is not None:  # the VampPrior's: the inference surrogate's too
            inference_variables = inference_variables + self.pseudo_inputs.trainable_weights
        generative_variables = self.generative_network.trainable_weights
        gradients = tape.gradient(inference_loss, inference_variables)
        gradients += tape.gradient(generative_loss, generative_variables)
        return gradients, inference_variables + generative_variables, terms

    def _minibatch_step(self, x):
        step = tf.convert_to_tensor(self.optimizer.iterations)
        gradients, variables, terms = self._gradients(x, step)
        self.optimizer.apply(gradients, variables)
        self._track(terms)

    def train_step(self, images):
        if len(images.shape) == 2:
            self._minibatch_step(images)
        else:

            def body(i):
                self._minibatch_step(tf.gather(images, i))
                return (i + 1,)

            tf.while_loop(lambda i: i < tf.shape(images)[0], body, (tf.constant(0),))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, images):
        """Validation: the true bounds (beta = 1) on fixed draws (the same eps every epoch)."""
        x = tf.cast(images, tf.float32)
        eps = self._eps(x, streams.key("validation_noise", self.seed))
        self._track(bounds_per_example(x, self.networks, eps))
        return {name: tracker.result() for name, tracker in self.trackers.items()}
