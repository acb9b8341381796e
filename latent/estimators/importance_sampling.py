"""The importance-sampled marginal likelihood log p(x) and the ELBO of saved networks, with k
samples per example, in bounded memory for any k.

The math is vae.py's: for each example x and samples z_i ~ q(z|x),

    log p(x) ~= logmeanexp_i log w_i,  log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
    ELBO(x)  ~= (1/k) sum_i log p(x|z_i) - KL(q(z|x) || p(z))

(``vae.iwae_bound``, ``vae.log_importance_weights``, ``vae.elbo``), in nats per example.

What is this module's own is the bookkeeping: a compiled call takes a few tiles of TILE examples
and loops over blocks of at most BLOCK samples. Each block's bound, log mean_i w_i over its
samples, is folded into a running log-sum-exp (``combine_blocks``), so the whole (k, N) matrix
of weights never exists. The random draws are laid out on that grid: the eps of tile t, block b
come from the stateless key (seed, t * 2^20 + b) of their purpose (``streams``), so the numbers
depend on (seed, k) only, not on how many tiles a call takes (up to float32 rounding where the
compiler picks other kernels for other shapes).

The ELBO's Monte Carlo standard error needs the spread of a term of about -100 to -500 nats whose
standard deviation may be under one nat: E[t^2] - E[t]^2 in float32 loses it (0.3 % off on the
tests' model), so each block's mean and centred sum of squares are merged into running ones
(``merge_spreads``, Chan, Golub & LeVeque's pairwise update).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from latent.data.datasets import PIXELS
from latent.model import vae
from latent.plumbing import streams

TILE = 64  # examples per random-number tile
BLOCK = 64  # samples per block (k < BLOCK: one block of k): 4096 decoder rows a step, whose
# logits stay in cache (measured faster than 8192 rows, benchmarks/benchmark.py)
MAX_BLOCKS = streams.BLOCKS


def default_tiles_per_call() -> int:
    """4k decoder rows per loop step on a CPU (per-call overhead vs cache), 128k on a GPU."""
    return 32 if tf.config.list_physical_devices("GPU") else 1


def combine_blocks(running_max, running_sum, block_bound, block_size):
    """Fold one block's log mean of weights into a running log-sum-exp of all weights so far:
    sum_so_far = exp(running_max) * running_sum; adds block_size * exp(block_bound)."""
    block_log_sum = block_bound + tf.math.log(tf.cast(block_size, block_bound.dtype))
    new_max = tf.maximum(running_max, block_log_sum)
    running_sum = running_sum * tf.exp(running_max - new_max) + tf.exp(block_log_sum - new_max)
    return new_max, running_sum


class Spread(NamedTuple):
    """The running count (scalar), mean and centred sum of squares, sum (t - mean)^2, (N,) of
    a per-example term over the samples so far."""

    count: tf.Tensor
    mean: tf.Tensor
    sum_of_squares: tf.Tensor


class SampleSums(NamedTuple):
    """Per-example sums (N,) over the samples so far of log p(x|z) and of log w."""

    log_px_given_z: tf.Tensor
    log_weights: tf.Tensor


def merge_spreads(spread: Spread, block_values, in_block) -> Spread:
    """Add one block of values (block, N), the rows where ``in_block`` (block,) holds, to the
    running ``spread`` of those before; returns the updated spread."""
    count, mean, sum_of_squares = spread
    mask = tf.cast(in_block, block_values.dtype)[:, None]
    block_count = tf.reduce_sum(mask[:, 0])
    block_mean = tf.reduce_sum(block_values * mask, 0) / block_count
    block_squares = tf.reduce_sum(tf.square(block_values - block_mean) * mask, 0)
    total = count + block_count
    delta = block_mean - mean
    mean = mean + delta * (block_count / total)
    between = tf.square(delta) * (count * block_count / total)
    sum_of_squares = sum_of_squares + block_squares + between
    return Spread(total, mean, sum_of_squares)


class ImportanceSampler:
    """Per-example ELBO terms and log p(x) estimates from saved networks, with k importance
    samples from q(z|x) drawn from a fixed seed (``q`` may be replaced, e.g. by a refined one)."""

    def __init__(
        self,
        networks: vae.Networks,
        k: int,
        seed: int,
        posterior=None,
        purpose: str = "importance_sampling",
    ):
        if k < 1 or math.ceil(k / BLOCK) > MAX_BLOCKS:
            raise ValueError(f"k = {k} must be from 1 to {BLOCK * MAX_BLOCKS}")
        self.networks = networks
        self.posterior = posterior or (lambda x, rows: vae.approximate_posterior(networks, x))
        self.k = int(k)
        self.block = min(self.k, BLOCK)
        self.blocks = math.ceil(self.k / self.block)
        self.seed = int(seed)
        self.purpose = purpose
        # one trace per tile count
        self._compiled = tf.function(self._estimate_tiles, jit_compile=True)

    def eps(self, tile, block):
        """eps ~ N(0, I) for one tile and one block: (block size, TILE, L)."""
        counter = tf.cast(tile, tf.int64) * streams.BLOCKS + tf.cast(block, tf.int64)
        key = streams.key(self.purpose, self.seed, counter)
        return vae.standard_normal([self.block, TILE, self.networks.latent_dim], key)

    def _estimate_tiles(self, x, tile_ids):
        """x (T * TILE, 784) float32, tile_ids (T,) -> per-example values over all k samples."""
        rows = tile_ids[:, None] * TILE + tf.range(TILE, dtype=tf.int64)[None, :]
        q = self.posterior(x, tf.reshape(rows, [-1]))
        n = tf.shape(x)[0]
        tiles = x.shape[0] // TILE

        # the ELBO's Monte Carlo error is that of mean log p(x|z) (analytic KL) or of mean log w
        analytic = vae.analytic_kl(q, self.networks) is not None

        def body(b, running_max, running_sum, sums, spread):
            eps = tf.concat([self.eps(tile_ids[t], b) for t in range(tiles)], axis=1)
            z, log_q = vae.sample_and_log_prob(q, eps)  # (block, n, L), (block, n)
            log_weights, log_px_given_z = vae.log_importance_weights(x, z, log_q, self.networks)
            in_k = (b * self.block + tf.range(self.block)) < self.k  # the last block may overhang
            spread = merge_spreads(spread, log_px_given_z if analytic else log_weights, in_k)
            log_weights = tf.where(in_k[:, None], log_weights, -np.inf)
            running_max, running_sum = combine_blocks(
                running_max, running_sum, vae.iwae_bound(log_weights), self.block
            )
            terms = SampleSums(log_px_given_z, log_weights)
            sums = SampleSums(
                *(
                    s + tf.reduce_sum(tf.where(in_k[:, None], t, 0.0), 0)
                    for s, t in zip(sums, terms)
                )
            )
            return b + 1, running_max, running_sum, sums, spread

        zeros = tf.zeros([n])
        _, running_max, running_sum, sums, spread = tf.while_loop(
            lambda b, *_: b < self.blocks,
            body,
            (
                tf.constant(0),
                tf.fill([n], -np.inf),
                zeros,
                SampleSums(zeros, zeros),
                Spread(0.0, zeros, zeros),
            ),
        )
        # the ELBO from the sample means of log p(x|z) and log w over all k samples
        mean_log_px_given_z = sums.log_px_given_z / self.k
        mean_log_weights = sums.log_weights / self.k
        elbo, expected_log_likelihood, kl = vae.elbo(
            mean_log_px_given_z[None], mean_log_weights[None], q, self.networks
        )
        variance = spread.sum_of_squares / self.k
        return {
            "log_px": running_max + tf.math.log(running_sum) - math.log(self.k),
            "elbo": elbo,
            "expected_log_likelihood": expected_log_likelihood,
            "kl": kl,
            "elbo_standard_error": tf.sqrt(variance / self.k),
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
        padded = np.zeros((total_tiles * TILE, PIXELS), np.float32)
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
