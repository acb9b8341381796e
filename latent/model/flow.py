"""The flow posterior's parts: Keras 3 masked autoregressive networks and the TFP bijector of an
inverse autoregressive flow step (Kingma et al. 2016, "Improved Variational Inference with Inverse
Autoregressive Flow", eqs. 10-14, the "LSTM-type" update).

One IAF step maps z to z' with a MADE (Germain et al. 2015) that reads z and the context h that
the inference network computes from x:

    [m, s] = MADE(z, h)          m_i and s_i depend on z_1 .. z_{i-1} (and h) only
    sigma  = sigmoid(s)          s starts near +2 (sigma ~ 0.88): each step starts close to identity
    z'     = sigma * z + (1 - sigma) * m
    log q(z'|x) = log q(z|x) - sum_i log sigma_i

``AutoregressiveStep`` is that update as a ``tfb.Bijector``: the forward pass (sampling, and log q
of what was sampled) is one MADE evaluation per step; the inverse (log q of an arbitrary z, e.g.
on a grid) takes one per latent dimension. ``PosteriorFlow`` holds the steps' networks (a Keras
model, saved as models/posterior_flow.keras) and chains the steps, reversing the latent order
between them.

``tfb.AutoregressiveNetwork`` is a Keras 2 (tf_keras) layer and cannot live in a Keras 3 model,
hence ``MaskedDense`` and ``Made`` here. This is the one module a saved flow needs:
``import latent.model.flow`` registers the layers, then ``keras.saving.load_model`` reads the
file; ``flow.bijector(context)`` is then the flow for a batch of contexts.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

GATE_BIAS = 2.0  # initial s: sigmoid(2) = 0.88, so z' stays close to z at the start of training
MIN_HIDDEN_UNITS = 16
GATED = "gated"  # the activation param's gated linear units, a * sigmoid(b) (keras "glu")


def hidden_degrees(latent_dim: int, units: int) -> np.ndarray:
    """Degrees 0 .. L-1 of the hidden units, cyclically: a unit of degree d sees z_1 .. z_d (and
    the context; degree 0 sees the context only, which carries it to every output)."""
    return np.arange(units) % latent_dim


def autoregressive_mask(in_degrees: np.ndarray, out_degrees: np.ndarray, strict: bool):
    """mask[a, b] = 1 where input a may feed output b: in <= out (hidden), in < out (outputs)."""
    compare = np.less if strict else np.less_equal
    return compare(in_degrees[:, None], out_degrees[None, :]).astype(np.float32)


class MaskedDense(keras.layers.Dense):
    """A Dense layer whose kernel is multiplied by a fixed 0/1 mask (in_features, units). Only
    ``Made`` makes them, and remakes them with their masks when a saved flow is loaded."""

    def __init__(self, units, mask, **kwargs):
        super().__init__(units, **kwargs)
        self.mask = np.asarray(mask, np.float32)

    def call(self, inputs):
        outputs = tf.matmul(inputs, self.kernel * self.mask)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="vae")
class Made(keras.layers.Layer):
    """MADE with two hidden layers: (z (..., L), context h (..., H)) -> (m, s), each (..., L).

    Degrees: input i (1-based) has degree i; hidden units degrees 0 .. L-1; output i degree i.
    The context enters the first hidden layer through an unmasked Dense layer. The s outputs'
    biases start at GATE_BIAS and the output kernel near 0, so the step starts near identity.
    With ``activation="gated"`` a hidden layer computes [a, b] for its units in one matmul
    (twice the width, each half under the layer's mask) and keeps a * sigmoid(b).
    """

    def __init__(self, latent_dim, context_units, hidden_units, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.context_units = context_units
        self.hidden_units = hidden_units
        self.activation = activation
        inputs = np.arange(1, latent_dim + 1)
        hidden = hidden_degrees(latent_dim, hidden_units)
        outputs = np.concatenate([inputs, inputs])  # m and s of each dimension
        gate_bias = np.concatenate([np.zeros(latent_dim), np.full(latent_dim, GATE_BIAS)])
        halves = 2 if activation == GATED else 1  # a and b of each gated unit
        first = np.tile(autoregressive_mask(inputs, hidden, False), halves)
        second = np.tile(autoregressive_mask(hidden, hidden, False), halves)
        self.masked = [
            MaskedDense(halves * hidden_units, first, name="masked_0"),
            MaskedDense(halves * hidden_units, second, name="masked_1"),
            MaskedDense(
                2 * latent_dim,
                autoregressive_mask(hidden, outputs, True),
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                bias_initializer=keras.initializers.Constant(gate_bias),
                name="masked_2",
            ),
        ]
        self.context = keras.layers.Dense(halves * hidden_units, use_bias=False, name="context")
        for layer, width in zip(self.masked, (latent_dim, hidden_units, hidden_units)):
            layer.build((None, width))
        self.context.build((None, context_units))
        self.built = True

    def call(self, z, context):
        gated = self.activation == GATED
        act = keras.activations.glu if gated else keras.activations.get(self.activation)
        hidden = act(self.masked[0](z) + self.context(context))
        hidden = act(self.masked[1](hidden))
        m, s = tf.split(self.masked[2](hidden), 2, axis=-1)
        return m, s

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "context_units": self.context_units,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        }


class AutoregressiveStep(tfb.Bijector):
    """One IAF step as a bijector: z -> sigmoid(s) * z + (1 - sigmoid(s)) * m, [m, s] = made(z, h).

    The context h is fixed when the bijector is made (one per q(z|x)); z may carry leading sample
    dimensions (k, N, L) over h's (N, H). The forward pass and its log-determinant share one MADE
    evaluation (the last input's (m, s) is kept, with a weak reference to that input).

    The reference must be weak: TFP's bijector cache is one dictionary for every bijector, whose
    keys hold the bijector; a bijector that held its input strongly would keep its own cache
    entry, and with it every tensor of the pass, alive for the whole process (in eager mode,
    about 180 MB for each posterior-mean snapshot of 2,000 images at latent 50).
    """

    def __init__(self, made: Made, context, name="autoregressive_step"):
        parameters = dict(locals())
        self.made = made
        self.context = context
        self._last = None  # (weak reference to z, m, s) of the last MADE evaluation
        super().__init__(forward_min_event_ndims=1, parameters=parameters, name=name)

    def _gate(self, z):
        if self._last is None or self._last[0]() is not z:
            self._last = (weakref.ref(z), *self.made(z, self.context))
        return self._last[1:]

    def _forward(self, z):
        m, s = self._gate(z)
        sigma = tf.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m

    def _forward_log_det_jacobian(self, z):
        _, s = self._gate(z)
        return tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)

    def _inverse(self, y):
        # z_i = (y_i - (1 - sigma_i) m_i) / sigma_i, where m_i, sigma_i need z_1 .. z_{i-1}:
        # after pass i the first i coordinates are exact, so L passes recover z.
        z = tf.zeros_like(y)
        for _ in range(self.made.latent_dim):
            m, s = self.made(z, self.context)
            sigma = tf.sigmoid(s)
            z = (y - (1.0 - sigma) * m) / sigma
        return z

    def _inverse_log_det_jacobian(self, y):
        return -self._forward_log_det_jacobian(self._inverse(y))


@keras.saving.register_keras_serializable(package="vae")
class PosteriorFlow(keras.Model):
    """The MADEs of ``steps`` IAF steps; ``bijector(h)`` chains them for one batch of contexts."""

    def __init__(
        self, latent_dim, steps, context_units, hidden_units=None, activation="relu", **kw
    ):
        super().__init__(**kw)
        self.latent_dim = latent_dim
        self.steps = steps
        self.context_units = context_units
        self.hidden_units = hidden_units or max(2 * latent_dim, MIN_HIDDEN_UNITS)
        self.activation = activation
        self.mades = [
            Made(latent_dim, context_units, self.hidden_units, activation, name=f"made_{t}")
            for t in range(steps)
        ]
        self.built = True

    def bijector(self, context) -> tfb.Bijector:
        """z_0 -> z_T through every step, the latent order reversed between steps."""
        reverse = tfb.Permute(permutation=np.arange(self.latent_dim)[::-1])
        chain = []
        for t, made in enumerate(self.mades):
            if t > 0:
                chain.append(reverse)
            chain.append(AutoregressiveStep(made, context, name=f"iaf_step_{t}"))
        return tfb.Chain(chain[::-1], name="posterior_flow")  # Chain applies the last one first

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "steps": self.steps,
            "context_units": self.context_units,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        }
