"""ELBO and importance-sampled log-likelihood of saved networks, batched to bounded memory.

For each example x and k samples z_i ~ q(z|x):

    log p(x) ~= logmeanexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)]   (IWAE, Burda et al.)
    ELBO(x)  ~= (1/k) sum_i log p(x|z_i) - KL(q(z|x) || p(z))             (KL analytic)

Both in nats per example, reduced with log-sum-exp, never by exponentiating the weights.

Memory stays bounded for any k: a compiled call takes a few tiles of TILE examples and loops over
blocks of at most BLOCK samples, keeping a running log-sum-exp. The random draws are laid out
on that grid: the eps of tile t, block b come from the stateless seed (seed, t * 2^20 + b). So
the numbers depend on (seed, k) only, not on how many tiles a call takes: chunked and unchunked
computation give the same values (up to float rounding of the sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from stages import vae

TILE = 64  # examples per random-number tile
BLOCK = 128  # samples per block (k < BLOCK: one block of k)
MAX_BLOCKS = 2**20


def default_tiles_per_call() -> int:
    """8k decoder rows per loop step on a CPU (per-call overhead vs cache), 128k on a GPU."""
    return 16 if tf.config.list_physical_devices("GPU") else 1


class ImportanceSampler:
    """Per-example ELBO terms and log p(x) estimates from the saved inference and generative
    networks, with k importance samples drawn from a fixed seed."""

    def __init__(self, inference_network, generative_network, k: int, seed: int):
        if k < 1 or math.ceil(k / BLOCK) > MAX_BLOCKS:
            raise ValueError(f"k = {k} must be from 1 to {BLOCK * MAX_BLOCKS}")
        self.inference_network = inference_network
        self.generative_network = generative_network
        self.latent_dim = vae.latent_dim_of(generative_network)
        self.k = int(k)
        self.block = min(self.k, BLOCK)
        self.blocks = math.ceil(self.k / self.block)
        self.seed = int(seed)
        self._compiled = tf.function(self._tiles, jit_compile=True)  # one trace per tile count

    def eps(self, tile, block):
        """eps ~ N(0, I) for one tile and one block: (block size, TILE, L)."""
        seed = tf.stack(
            [
                tf.constant(self.seed, tf.int64),
                tf.cast(tile, tf.int64) * MAX_BLOCKS + tf.cast(block, tf.int64),
            ]
        )
        return vae.standard_normal([self.block, TILE, self.latent_dim], seed)

    def _tiles(self, x, tile_ids):
        """x (T * TILE, 784) float32, tile_ids (T,) -> per-example terms over all k samples."""
        q = vae.approximate_posterior(self.inference_network, x)
        p_z = vae.prior(self.latent_dim)
        kl = vae.tfd.kl_divergence(q, p_z)
        n = tf.shape(x)[0]
        tiles = x.shape[0] // TILE

        def body(b, running_max, running_sum, log_likelihood_sum):
            eps = tf.concat([self.eps(tile_ids[t], b) for t in range(tiles)], axis=1)
            z = vae.reparameterized_sample(q, eps)  # (block, n, L)
            log_px_given_z = vae.likelihood(self.generative_network, z).log_prob(x)
            log_weights = log_px_given_z + p_z.log_prob(z) - q.log_prob(z)
            in_k = (b * self.block + tf.range(self.block)) < self.k  # the last block may overhang
            log_weights = tf.where(in_k[:, None], log_weights, -np.inf)
            log_px_given_z = tf.where(in_k[:, None], log_px_given_z, 0.0)
            new_max = tf.maximum(running_max, tf.reduce_max(log_weights, axis=0))
            running_sum = running_sum * tf.exp(running_max - new_max) + tf.reduce_sum(
                tf.exp(log_weights - new_max), axis=0
            )
            return (
                b + 1,
                new_max,
                running_sum,
                log_likelihood_sum + tf.reduce_sum(log_px_given_z, 0),
            )

        _, running_max, running_sum, log_likelihood_sum = tf.while_loop(
            lambda b, *_: b < self.blocks,
            body,
            (tf.constant(0), tf.fill([n], -np.inf), tf.zeros([n]), tf.zeros([n])),
        )
        expected_log_likelihood = log_likelihood_sum / self.k
        return {
            "log_px": running_max + tf.math.log(running_sum) - math.log(self.k),
            "elbo": expected_log_likelihood - kl,
            "expected_log_likelihood": expected_log_likelihood,
            "kl": kl,
        }

    def __call__(
        self,
        images: np.ndarray,
        tiles_per_call: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-example values (nats) for ``images`` (N, 784) in {0, 1}; examples are numbered
        from 0 in the order given, which fixes their random draws."""
        tiles_per_call = tiles_per_call or default_tiles_per_call()
        n = len(images)
        total_tiles = math.ceil(n / TILE)
        padded = np.zeros((total_tiles * TILE, vae.PIXELS), np.float32)
        padded[:n] = images
        parts: dict[str, list[np.ndarray]] = {}
        for first in range(0, total_tiles, tiles_per_call):
            ids = np.arange(first, min(first + tiles_per_call, total_tiles))
            rows = slice(first * TILE, (ids[-1] + 1) * TILE)
            out = self._compiled(tf.constant(padded[rows]), tf.constant(ids, tf.int64))
            for name, value in out.items():
                parts.setdefault(name, []).append(value.numpy())
            if progress:
                progress(min((ids[-1] + 1) * TILE, n), n)
        return {name: np.concatenate(values)[:n] for name, values in parts.items()}
