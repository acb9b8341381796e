"""The variational autoencoder of the seed post, in both of its languages.

    probability model                                neural-net language
    prior            p(z)   = N(0, I)                 -
    likelihood       p(x|z) = Bernoulli(logits=g(z))  decoder g  = generative network
    approx posterior q(z|x) = N(loc(x), scale(x))     encoder    = inference network
    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))    -ELBO       = the loss
    IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x)  (k = 1: a one-sample ELBO)

The two networks are plain Keras 3 models made of Dense layers only, so the saved ``.keras``
files load with ``keras.saving.load_model`` and nothing from this repository. The
distributions are TensorFlow Probability's (``tfd``), built around the networks' outputs.

Every value named ``*_per_example`` is in nats for each example (summed over pixels and latent
dimensions); losses are batch means of those.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from stages.runtime import StageError

tfd = tfp.distributions

PIXELS = 784
RNG_ALG = "philox"  # the default stateless algorithm is ~25x slower under XLA on CPU


# --- the networks ---------------------------------------------------------------------------


def make_inference_network(latent_dim: int, hidden_units: list[int], activation: str):
    """Encoder: x (N, 784) in {0, 1} -> [loc (N, L), scale (N, L) > 0] of q(z|x)."""
    x = keras.Input((PIXELS,), name="x")
    h = x
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    loc = keras.layers.Dense(latent_dim, name="loc")(h)
    scale = keras.layers.Dense(latent_dim, activation="softplus", name="scale")(h)
    return keras.Model(x, [loc, scale], name="inference_network")


def make_generative_network(latent_dim: int, hidden_units: list[int], activation: str):
    """Decoder: z (N, L) -> 784 Bernoulli logits of p(x|z); hidden layers mirror the encoder's."""
    z = keras.Input((latent_dim,), name="z")
    h = z
    for i, units in enumerate(reversed(hidden_units)):
        h = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    logits = keras.layers.Dense(PIXELS, name="logits")(h)
    return keras.Model(z, logits, name="generative_network")


def latent_dim_of(generative_network) -> int:
    return int(generative_network.inputs[0].shape[-1])


INFERENCE_NETWORK_FILE = "inference_network.keras"
GENERATIVE_NETWORK_FILE = "generative_network.keras"


def save_networks(inference_network, generative_network, directory) -> None:
    inference_network.save(Path(directory) / INFERENCE_NETWORK_FILE)
    generative_network.save(Path(directory) / GENERATIVE_NETWORK_FILE)


def load_networks(directory):
    """(inference network, generative network) from the train stage's .keras files."""
    paths = [Path(directory) / name for name in (INFERENCE_NETWORK_FILE, GENERATIVE_NETWORK_FILE)]
    for path in paths:
        if not path.exists():
            raise StageError(f"{path} not found: run the train stage first")
    return tuple(keras.saving.load_model(path, compile=False) for path in paths)


# --- the distributions ----------------------------------------------------------------------


def prior(latent_dim: int):
    """p(z) = N(0, I)."""
    return tfd.Independent(
        tfd.Normal(loc=tf.zeros([latent_dim]), scale=tf.ones([latent_dim])),
        reinterpreted_batch_ndims=1,
        name="prior",
    )


def approximate_posterior(inference_network, x):
    """q(z|x): a diagonal Gaussian whose parameters the inference network computes from x."""
    loc, scale = inference_network(x)
    return tfd.Independent(tfd.Normal(loc=loc, scale=scale), 1, name="approximate_posterior")


def likelihood(generative_network, z):
    """p(x|z): 784 independent Bernoulli pixels; z may carry leading sample dims, (..., L)."""
    flat = tf.reshape(z, [-1, z.shape[-1]])
    logits = generative_network(flat)
    logits = tf.reshape(logits, tf.concat([tf.shape(z)[:-1], [PIXELS]], axis=0))
    return tfd.Independent(tfd.Bernoulli(logits=logits), 1, name="likelihood")


def reparameterized_sample(q, eps):
    """z = loc + scale * eps, eps ~ N(0, I) (k, N, L): samples of q that carry gradients."""
    return q.distribution.loc + q.distribution.scale * eps


# --- the bounds -----------------------------------------------------------------------------


def bounds_per_example(x, inference_network, generative_network, eps):
    """ELBO and IWAE bounds of log p(x) for each example, from the k samples in eps (k, N, L).

    Returns nats per example (shape (N,)):
      expected_log_likelihood  (1/k) sum_i log p(x|z_i)         (Monte Carlo)
      kl                       KL(q(z|x) || p(z))                (analytic)
      elbo                     expected_log_likelihood - kl
      iwae                     logmeanexp_i [log p(x, z_i) - log q(z_i|x)]
    """
    q = approximate_posterior(inference_network, x)
    p_z = prior(eps.shape[-1])
    z = reparameterized_sample(q, eps)
    log_px_given_z = likelihood(generative_network, z).log_prob(x)  # (k, N)
    kl = tfd.kl_divergence(q, p_z)
    expected_log_likelihood = tf.reduce_mean(log_px_given_z, axis=0)
    log_weights = log_px_given_z + p_z.log_prob(z) - q.log_prob(z)  # log p(x, z) - log q(z|x)
    k = tf.cast(tf.shape(eps)[0], log_weights.dtype)
    return {
        "expected_log_likelihood": expected_log_likelihood,
        "kl": kl,
        "elbo": expected_log_likelihood - kl,
        "iwae": tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k),
    }


def standard_normal(shape, seed):
    """eps ~ N(0, I) from a stateless seed (2 integers): the same seed gives the same eps."""
    return tf.random.stateless_normal(shape, seed=seed, alg=RNG_ALG)


def bernoulli_pixels(intensities, seed):
    """A fresh binarization of uint8 intensities: each pixel 1 with probability pixel / 255."""
    uniform = tf.random.stateless_uniform(tf.shape(intensities), seed=seed, alg=RNG_ALG)
    return tf.cast(uniform < tf.cast(intensities, tf.float32) / 255.0, tf.float32)


# --- training -------------------------------------------------------------------------------


class VariationalAutoencoder(keras.Model):
    """Trains the inference and generative networks together by maximising the ELBO (k = 1) or
    the IWAE bound (k = ``train_samples`` > 1), with a custom ``train_step`` so that ``fit``,
    its callbacks and validation work as usual.

    A training batch is either one minibatch (B, 784) or a stack of minibatches (S, B, 784); a
    stack is trained as S optimizer steps inside one compiled call, which removes the per-call
    overhead that otherwise dominates small models. The random draws of step t depend only on
    (seed, t), so the result is the same whatever S is.
    """

    def __init__(
        self,
        inference_network,
        generative_network,
        train_samples=1,
        seed=0,
        dynamic_binarization=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.inference_network = inference_network
        self.generative_network = generative_network
        self.latent_dim = latent_dim_of(generative_network)
        self.train_samples = int(train_samples)
        self.seed = int(seed)
        self.dynamic_binarization = bool(dynamic_binarization)
        self.objective_name = "elbo" if self.train_samples == 1 else "iwae"
        names = ["elbo", "expected_log_likelihood", "kl"]
        if self.train_samples > 1:
            names.append("iwae")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, x):
        """The posterior mean E_q[z|x] of each example."""
        return self.inference_network(x)[0]

    def _stream(self, counter, stream):
        """A stateless seed for draw ``stream`` of step ``counter`` (distinct per replica)."""
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
        counter = tf.cast(counter, tf.int64) * replicas + replica
        return tf.stack([tf.constant(self.seed, tf.int64), 2 * counter + stream])

    def _objective_per_example(self, x, seed):
        eps = standard_normal([self.train_samples, tf.shape(x)[0], self.latent_dim], seed)
        terms = bounds_per_example(x, self.inference_network, self.generative_network, eps)
        return terms[self.objective_name], terms

    def _track(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])

    def _minibatch_step(self, pixels):
        step = tf.convert_to_tensor(self.optimizer.iterations)
        if self.dynamic_binarization:
            x = bernoulli_pixels(pixels, self._stream(step, 1))
        else:
            x = tf.cast(pixels, tf.float32)
        with tf.GradientTape() as tape:
            objective, terms = self._objective_per_example(x, self._stream(step, 0))
            loss = -tf.reduce_mean(objective)
            # gradients are summed over replicas: scale so that the step is the global mean's
            scaled_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self._track(terms)

    def train_step(self, pixels):
        if len(pixels.shape) == 2:
            self._minibatch_step(pixels)
        else:

            def body(i):
                self._minibatch_step(tf.gather(pixels, i))
                return (i + 1,)

            tf.while_loop(lambda i: i < tf.shape(pixels)[0], body, (tf.constant(0),))
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, pixels):
        """Validation: the same bounds on fixed draws (the same eps every epoch)."""
        x = tf.cast(pixels, tf.float32)
        _, terms = self._objective_per_example(x, self._stream(-1, 0))
        self._track(terms)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def flops_per_example(latent_dim: int, hidden_units: list[int], samples: int = 1) -> dict:
    """2 x multiply-adds of the matmuls: one encoder pass and ``samples`` decoder passes."""
    widths = [PIXELS, *hidden_units]
    encoder = sum(2 * a * b for a, b in zip(widths, widths[1:])) + 2 * 2 * widths[-1] * latent_dim
    dec_widths = [latent_dim, *reversed(hidden_units), PIXELS]
    decoder = sum(2 * a * b for a, b in zip(dec_widths, dec_widths[1:]))
    forward = encoder + samples * decoder
    return {"forward": forward, "train": 3 * forward, "decoder": decoder, "encoder": encoder}
