"""The prior p(z), a modelling choice. The post takes N(0, I); the param ``prior`` chooses:

    standard   p(z) = N(0, I)
    vamp       p(z) = (1/K) sum_k q(z | u_k)     the VampPrior (Tomczak & Welling 2018, "VAE with
                                                 a VampPrior"), K = ``prior_components``

In the probability view p(z) is what the model believes about the code z before it sees an
image, and p(x) = integral p(x|z) p(z) dz. The VampPrior learns it: a uniform mixture of the
approximate posteriors at K pseudo-inputs u_k, images that are themselves trained and live with
the networks (models/pseudo_inputs.keras). It is the aggregate posterior (1/N) sum_n q(z|x_n) of
the training set, the prior that maximizes the ELBO, approximated by K learned stand-ins for the
N training images.

In the neural-net view the prior is the part of the loss the encoder's outputs are pulled
towards: KL(q(z|x) || p(z)) pulls every q(z|x) towards N(0, I), or, with the VampPrior, towards
the encoder's own outputs at the pseudo-inputs, so that the prior moves with the encoder instead
of holding every code near the origin.

With the flow posterior the mixture is of the flow's *base* Gaussians at the pseudo-inputs,
N(z; loc(u_k), scale(u_k)), not of the flow densities q(z|u_k): the flow's log density at an
arbitrary z needs its inverse, one MADE pass per latent dimension, for every component and every
sample, where the base Gaussians' log densities are one (samples, K, L) expression. The mixture
is a normalized density either way, so every bound stays a bound.

The mixture's log density is TFP's ``MixtureSameFamily`` with its ``log_prob`` evaluated by two
matmuls (``GaussianMixture``): sum_l (z_l - loc_kl)^2 / scale_kl^2 expanded into z^2 . (1/scale^2)
- 2 z . (loc/scale^2) + sum_l loc^2/scale^2. TFP's own log_prob broadcasts every sample against
every component, an (..., K, L) array whose forward and backward passes made training 4.8 times
slower than with N(0, I) (the paper-sized flow, IWAE k = 5, K = 500, this 2-core Xeon: 1,425
against 6,827 examples/s); the matmuls give 4,350, the rest being the encoder's pass over the
pseudo-inputs. The price is float32 cancellation in the expansion: against float64, on codes
near their component (scales 0.03 to 1), the error is 0.001 nats rms, 0.008 at most, and its
mean is 1e-5 (TFP's: 5e-6 rms), far below the Monte Carlo error of any estimate here.

The pseudo-inputs are as in the authors' code (jmtomczak/vae_vampprior): u = clip(w, 0, 1) of a
free weight w (K, 784), initialized N(0.05, 0.01), so that they start as near-black images and
stay in the pixels' range.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from latent.data.datasets import PIXELS

tfd = tfp.distributions

PRIORS = ("standard", "vamp")
PSEUDO_INPUT_MEAN = 0.05  # the authors' initialization for MNIST
PSEUDO_INPUT_STDDEV = 0.01


def standard_normal_prior(latent_dim: int):
    """p(z) = N(0, I)."""
    return tfd.Independent(
        tfd.Normal(loc=tf.zeros([latent_dim]), scale=tf.ones([latent_dim])),
        reinterpreted_batch_ndims=1,
        name="prior",
    )


class GaussianMixture(tfd.MixtureSameFamily):
    """A mixture of diagonal Gaussians (components (K, L)) whose ``log_prob`` of z (..., L) is
    two matmuls instead of TFP's (..., K, L) broadcast (see the module docstring)."""

    def _log_prob(self, z):
        normal = self.components_distribution.distribution
        loc, scale = normal.loc, normal.scale
        precision = 1.0 / tf.square(scale)  # (K, L)
        flat = tf.reshape(z, [-1, z.shape[-1]])
        quadratic = (
            tf.matmul(tf.square(flat), precision, transpose_b=True)
            - 2.0 * tf.matmul(flat, loc * precision, transpose_b=True)
            + tf.reduce_sum(tf.square(loc) * precision, axis=-1)
        )  # (N, K): sum_l (z_l - loc_kl)^2 / scale_kl^2
        log_normalizer = tf.reduce_sum(tf.math.log(scale), axis=-1) + 0.5 * z.shape[-1] * math.log(
            2 * math.pi
        )
        log_weights = tf.nn.log_softmax(self.mixture_distribution.logits_parameter())
        log_components = -0.5 * quadratic - log_normalizer + log_weights
        log_density = tf.reduce_logsumexp(log_components, axis=-1)
        return tf.reshape(log_density, tf.shape(z)[:-1])


def mixture_prior(loc, scale):
    """p(z) = (1/K) sum_k N(z; loc_k, diag(scale_k^2)), from the encoder's Gaussian parameters
    (K, L) at the K pseudo-inputs."""
    components = tf.shape(loc)[0]
    return GaussianMixture(
        mixture_distribution=tfd.Categorical(logits=tf.zeros([components], loc.dtype)),
        components_distribution=tfd.Independent(tfd.Normal(loc=loc, scale=scale), 1),
        name="vamp_prior",
    )


@keras.saving.register_keras_serializable(package="vae")
class PseudoInputs(keras.Model):
    """The VampPrior's K learned pseudo-inputs u (K, 784) in [0, 1]: ``pseudo_inputs()``."""

    def __init__(self, components: int, name: str = "pseudo_inputs", **kwargs):
        super().__init__(name=name, **kwargs)
        self.components = int(components)
        initializer = keras.initializers.RandomNormal(PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STDDEV)
        self.free = self.add_weight(
            shape=(self.components, PIXELS), initializer=initializer, name="pseudo_inputs"
        )
        self.built = True

    def call(self, inputs=None):
        return keras.ops.clip(self.free, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "components": self.components}
