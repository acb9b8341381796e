"""Adam with the learning-rate schedules, the weights' moving average and decoupled weight decay."""

from __future__ import annotations

import keras
import numpy as np

from latent.plumbing.params import StageConfig

EMA_MOMENTUM = 0.999
IWAE_STAGES = 8  # Burda et al.: stage i of 3^i epochs at learning_rate * 10^(-i/7)


def learning_rate(config: StageConfig, steps_per_epoch: int):
    """The learning rate, or a Keras schedule of it over optimizer steps.

    iwae: Burda et al.'s schedule scaled to ``epochs``: 8 stages, stage i lasting a 3^i / 3280
    share of the epochs, at learning_rate * 10^(-i/7). cosine: from learning_rate down to 0.
    """
    base, schedule = config.learning_rate, config.lr_schedule
    total_steps = config.epochs * steps_per_epoch
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=total_steps)
    shares = np.cumsum([3**i for i in range(IWAE_STAGES)]) / sum(3**i for i in range(IWAE_STAGES))
    # stage i + 1 starts at step round(share_i * total): Keras keeps values[i] up to and including
    # boundaries[i]
    boundaries = [int(round(share * total_steps)) - 1 for share in shares[:-1]]
    values = [base * 10 ** (-i / 7) for i in range(IWAE_STAGES)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config: StageConfig, steps_per_epoch: int) -> keras.optimizers.Adam:
    """Adam at the scheduled learning rate; with ``ema``, keeping the weights' moving average; with
    ``weight_decay``, Keras' decoupled decay (each step multiplies every kernel by
    1 - learning rate * weight_decay, as AdamW does; biases and the VampPrior's pseudo-inputs,
    which are images, not kernels, are excluded)."""
    optimizer = keras.optimizers.Adam(
        learning_rate(config, steps_per_epoch),
        weight_decay=config.weight_decay or None,
        use_ema=config.ema,
        ema_momentum=EMA_MOMENTUM,
    )
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "pseudo_inputs"])
    return optimizer
