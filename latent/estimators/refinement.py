"""The refined, per-datapoint q*(z|x): the post's "run variational inference again" for each image.

q*(z|x) is the family of the amortized q(z|x) with free parameters for each image (loc, scale,
and for the flow its context h; the flow's and the generative network's weights stay frozen),
started at the inference network's output and moved by Adam to maximize the ELBO, all images in
parallel as one batch of variational parameters, with reparameterized one-sample gradients and
fresh eps every step (key ``gap_refinement`` of the seed and the step).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from latent.model import vae
from latent.plumbing import streams
from latent.plumbing.runtime import log

STEPS_PER_CALL = 10  # refinement steps per compiled call; the curve has one point per call


class RefinedPosterior:
    """Free per-image parameters of q*(z|x), started at the inference network's output."""

    def __init__(self, networks: vae.Networks, images: np.ndarray):
        outputs = networks.inference_network(tf.constant(images, tf.float32))
        loc, scale = outputs[0], outputs[1]
        raw_scale = scale + tf.math.log(-tf.math.expm1(-scale))  # softplus^-1, stably
        self.networks = networks
        self.loc = keras.Variable(loc, name="loc")
        self.raw_scale = keras.Variable(raw_scale, name="raw_scale")
        self.variables = [self.loc, self.raw_scale]
        self.context = None
        if len(outputs) > 2:
            self.context = keras.Variable(outputs[2], name="context")
            self.variables.append(self.context)

    def q(self, rows=None):
        """q*(z|x) of all images, or of the images at ``rows``."""
        pick = (lambda v: v) if rows is None else (lambda v: tf.gather(v, rows))
        context = None if self.context is None else pick(self.context)
        scale = tf.math.softplus(pick(self.raw_scale))
        return vae.posterior_from_parameters(pick(self.loc), scale, context, self.networks.flow)

    def box(self, index: int, width: float = 5.0):
        """The box of loc +- width * scale of q*'s base Gaussian for one image."""
        loc = self.loc.numpy()[index]
        scale = tf.math.softplus(self.raw_scale).numpy()[index]
        return loc - width * scale, loc + width * scale


def refine(
    posterior: RefinedPosterior, images, steps: int, learning_rate: float, seed: int, report=log
) -> pd.DataFrame:
    """Adam on the per-image parameters for ``steps`` steps (the learning rate decaying from
    ``learning_rate`` to 0 on a cosine), maximizing the sum over images of
    the one-sample ELBO (each image's parameters see only their own image's gradient). Returns
    the curve: the mean ELBO over images, averaged over each STEPS_PER_CALL steps."""
    x = tf.constant(images, tf.float32)
    # cosine decay to 0: the last steps average out the noise of one-sample gradients
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    optimizer.build(posterior.variables)
    latent_dim = posterior.networks.latent_dim

    def one_step(step):
        key = streams.key("gap_refinement", seed, step)
        eps = vae.standard_normal([1, len(images), latent_dim], key)
        with tf.GradientTape() as tape:
            q = posterior.q()
            z, log_q = vae.sample_and_log_prob(q, eps)
            log_weights, log_px_given_z = vae.log_importance_weights(
                x, z, log_q, posterior.networks
            )
            elbo = vae.elbo(log_px_given_z, log_weights, q, posterior.networks)[0]
            loss = -tf.reduce_sum(elbo)
        gradients = tape.gradient(loss, posterior.variables)
        optimizer.apply(gradients, posterior.variables)
        return tf.reduce_mean(elbo)

    @tf.function(jit_compile=True)
    def steps_call(first, count):  # count: a Python int (a second trace for a shorter last call)
        total = tf.constant(0.0)
        for i in range(count):
            total += one_step(first + i)
        return total / count

    rows, start = [], time.perf_counter()
    every = max(1, steps // STEPS_PER_CALL // 10)
    for first in range(0, steps, STEPS_PER_CALL):
        count = min(STEPS_PER_CALL, steps - first)
        mean_elbo = float(steps_call(tf.constant(first, tf.int64), count))
        rows.append({"step": first + count, "mean_refined_elbo": round(mean_elbo, 4)})
        if len(rows) % every == 0 or first + count == steps:
            report(
                f"refining q*: step {first + count}/{steps}, mean one-sample ELBO "
                f"{mean_elbo:.2f} nats, {time.perf_counter() - start:.0f} s"
            )
    return pd.DataFrame(rows)
