"""A linear-Gaussian model, p(x|z) = N(W z + b, NOISE^2 I) with z ~ N(0, I): its posterior and
marginal are known in closed form, so estimators can be checked against exact answers."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from latent.data.datasets import PIXELS
from latent.model import vae

NOISE = 0.5  # sd of the linear-Gaussian likelihood


def gaussian_likelihood(generative_network, z):
    """p(x|z) = N(W z + b, NOISE^2 I): a linear-Gaussian model, posterior Gaussian."""
    flat = tf.reshape(z, [-1, z.shape[-1]])
    loc = tf.reshape(generative_network(flat), tf.concat([tf.shape(z)[:-1], [PIXELS]], 0))
    return vae.tfd.Independent(vae.tfd.Normal(loc, NOISE), 1)


@pytest.fixture
def linear_gaussian(monkeypatch):
    """The stage's machinery with p(x|z) swapped for a linear-Gaussian one (W with orthogonal
    columns, so that the exact posterior has a diagonal covariance: the mean-field family holds
    it), an untrained encoder, and 8 images x drawn from the model."""
    monkeypatch.setattr(vae, "likelihood", gaussian_likelihood)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    w, _ = np.linalg.qr(rng.normal(size=(PIXELS, 2)))
    w = w * np.array([1.5, 0.7])  # columns orthogonal, of norms 1.5 and 0.7
    bias = rng.normal(0, 0.3, PIXELS)
    z = keras.Input((2,))
    decoder = keras.Model(z, keras.layers.Dense(PIXELS)(z))
    decoder.layers[-1].set_weights([w.T.astype(np.float32), bias.astype(np.float32)])
    networks = vae.Networks(vae.make_inference_network(2, [16], "tanh"), decoder)
    truth = rng.normal(size=(8, 2))
    images = (truth @ w.T + bias + rng.normal(0, NOISE, (8, PIXELS))).astype(np.float32)
    # exact posterior N(mean, cov), cov = (I + W'W / s^2)^-1 (diagonal); marginal N(b, WW' + s^2 I)
    precision = np.eye(2) + w.T @ w / NOISE**2
    cov = np.linalg.inv(precision)
    mean = (images - bias) @ w @ cov / NOISE**2
    marginal = np.array([marginal_log_density(x - bias, w) for x in images])
    return networks, images, mean, np.sqrt(np.diag(cov)), marginal


def marginal_log_density(centred, w):
    """log N(centred; 0, W W' + s^2 I) via the matrix determinant lemma and Woodbury."""
    d = len(centred)
    small = np.eye(2) + w.T @ w / NOISE**2
    log_det = d * math.log(NOISE**2) + np.linalg.slogdet(small)[1]
    projected = w.T @ centred / NOISE**2
    quadratic = centred @ centred / NOISE**2 - projected @ np.linalg.solve(small, projected)
    return -0.5 * (d * math.log(2 * math.pi) + log_det + quadratic)
