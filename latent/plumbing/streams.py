"""Stateless random streams: every purpose draws from keys of its own.

A stateless key is a pair of 64-bit integers, and philox draws with the same key share their
beginning whatever their shape, so two purposes must never share a key. ``key(purpose, seed,
counter)`` is ((purpose << 32) + seed, counter): the purpose sits above any seed (seeds are below
2^32), the counter numbers the draws within the purpose (a step, an epoch and minibatch, a tile
and block). The same params and seed therefore give the same draws, and changing one purpose's
draws (say, the evaluation's k) never changes another's.

Every stateless draw of the model's noise and the binarizations uses ALGORITHM (philox):
TensorFlow's default stateless algorithm runs about 25 times slower under XLA on a CPU. The one
exception is ``tfp_seed``'s draw of two integers, outside XLA, whose default algorithm is kept
because the figures' draws follow from it.
"""

from __future__ import annotations

import tensorflow as tf

ALGORITHM = "philox"
PURPOSES = {
    "static_binarization": 1,  # prepare: counter = the split's index
    "dynamic_binarization": 2,  # train: counter = epoch * 2^20 + minibatch
    "epoch_order": 3,  # train: counter = epoch
    "training_noise": 4,  # train: counter = optimizer step * replicas + replica
    "validation_noise": 5,  # train: counter 0, the same every epoch
    "posterior_means": 6,  # snapshots and figures: the flow's Monte Carlo means
    "importance_sampling": 7,  # evaluate, test split: counter = tile * 2^20 + block
    "gap_refinement": 8,  # inference_gap: counter = refinement step
    "gap_amortized": 9,  # inference_gap: importance sampling of q
    "gap_refined": 10,  # inference_gap: importance sampling of q*
    "figures": 11,  # figures: counter names the draw (TFP samplers, via tfp_seed)
    "validation_importance_sampling": 12,  # evaluate, validation split: as importance_sampling
    "ais_initial": 13,  # ais: the chains' first eps, counter = tile
    "ais": 14,  # ais: HMC transitions, counter = tile * 2^20 + step
    "bdmc_simulation": 15,  # ais: images simulated from the model for BDMC
    "prior_components": 16,  # ais: the VampPrior component of each z drawn from the prior,
    # counter = the counter of the eps it goes with (ais_initial's; 2^40 for bdmc_simulation)
}
BLOCKS = 2**20  # counters that number (major, minor) pairs: major * BLOCKS + minor


def key(purpose: str, seed, counter=0) -> tf.Tensor:
    """The stateless key (int64 pair) of draw ``counter`` of ``purpose`` for ``seed``."""
    first = tf.cast(PURPOSES[purpose], tf.int64) * 2**32 + tf.cast(seed, tf.int64)
    return tf.stack([first, tf.cast(counter, tf.int64)])


def tfp_seed(purpose: str, seed, counter=0) -> tf.Tensor:
    """An int32 pair for TFP's ``sample(seed=...)``, drawn from ``key(purpose, seed, counter)``."""
    return tf.random.stateless_uniform(
        [2], key(purpose, seed, counter), minval=None, maxval=None, dtype=tf.int32
    )
