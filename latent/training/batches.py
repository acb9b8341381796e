"""The training and validation input pipelines: binarized float32 minibatches, keyed by the
epoch so that a resumed run sees exactly the data an uninterrupted one would have."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from latent.data.binarization import binarize
from latent.data.datasets import INTENSITY, Split
from latent.plumbing import streams

VALID_BATCH = 2_000


def training_batches(
    train: Split,
    batch_size: int,
    minibatches_per_call: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
) -> tf.data.Dataset:
    """Every epoch from ``initial_epoch`` on, as one stream of binarized float32 minibatches,
    ``minibatches_per_call`` of them stacked per element (S, B, 784) (fewer at an epoch's end).

    Epoch e's order is a permutation keyed by (seed, e), and with dynamic binarization minibatch
    b of epoch e is drawn with the key (seed, e, b) (``streams``): the stream depends on the epoch
    number only, so a resumed run sees exactly the data an uninterrupted one would have. The
    images stay resident as one uint8 tensor; the remainder that does not fill a minibatch is
    left out each epoch (a different one every epoch).
    """
    images = tf.constant(train.images)
    count = len(train.images)
    steps = count // batch_size
    dynamic = train.encoding == INTENSITY
    counter = lambda epoch, index: epoch * streams.BLOCKS + index  # minibatch `index` of `epoch`

    def minibatch(epoch, index, rows):
        pixels = tf.gather(images, rows)
        if dynamic:
            return binarize(
                pixels, streams.key("dynamic_binarization", seed, counter(epoch, index))
            )
        return tf.cast(pixels, tf.float32)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=streams.key("epoch_order", seed, epoch)
        )
        rows = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        batches = tf.data.Dataset.from_tensor_slices(rows).enumerate()
        batches = batches.map(lambda index, rows: minibatch(epoch, index, rows))
        return batches.batch(minibatches_per_call) if minibatches_per_call > 1 else batches

    epochs = tf.data.Dataset.range(initial_epoch, epochs)
    return epochs.flat_map(epoch_batches).prefetch(2)


def validation_batches(images: np.ndarray):
    return tf.data.Dataset.from_tensor_slices(images).batch(VALID_BATCH).prefetch(2)
