"""A training run: build the model, resume from a backup if there is one, fit with the callbacks,
and return the best (or averaged) networks with the run's records.

The validation bound is computed every epoch; training stops early after ``patience`` epochs
without improvement and the kept networks are those of the best epoch (with ``ema``, of the
weights' moving average). With a ``TrainingBackup`` the state after every epoch is saved, and a
run that finds a state resumes from its last completed epoch (``latent.records.backup``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from latent.data.datasets import INTENSITY, PIXELS, Split
from latent.model import vae
from latent.plumbing import devices, params
from latent.plumbing.runtime import log
from latent.records import history
from latent.records.backup import Resumed, TrainingBackup
from latent.training.batches import training_batches, validation_batches
from latent.training.callbacks import (
    EarlyStopping,
    EpochRecord,
    NonFiniteGuard,
    Progress,
    SwapEMAWeights,
)
from latent.training.optimizer import make_optimizer

EXAMPLES_PER_CALL = 12_800  # minibatches stacked into one compiled call (a fit "step")
SNAPSHOT_EXAMPLES = 2_000


@dataclass
class TrainingRun:
    model: vae.VariationalAutoencoder
    records: list[EpochRecord]
    best_epoch: int
    snapshots: history.PosteriorSnapshots
    device: str
    resumed_from_epoch: int = 0


def pixel_means(train: Split) -> np.ndarray:
    """Each pixel's mean over the training images, as a probability (the decoder's first bias)."""
    scale = 255.0 if train.encoding == INTENSITY else 1.0
    return train.images.mean(axis=0, dtype=np.float64) / scale


def build_model(
    config: params.StageConfig, train: Split, steps_per_epoch: int
) -> vae.VariationalAutoencoder:
    networks = vae.make_networks(
        config.latent_dim,
        config.hidden_units,
        config.activation,
        config.posterior,
        config.flow_steps,
        pixel_means(train),
        config.prior,
        config.prior_components,
    )
    model = vae.VariationalAutoencoder(
        networks,
        train_samples=config.train_samples,
        seed=config.seed,
        kl_warmup_steps=config.kl_warmup_epochs * steps_per_epoch,
        gradient_estimator=config.gradient_estimator,
    )
    model.build((None, PIXELS))
    return model


def compiled_model(config, train, steps, strategy) -> vae.VariationalAutoencoder:
    """A fresh model and its optimizer, seeded: the same config gives the same initial state."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(config, train, steps)
        optimizer = make_optimizer(config, steps)
        model.compile(optimizer=optimizer, jit_compile=strategy.num_replicas_in_sync == 1)
        optimizer.build(model.trainable_variables)
    return model


def stack_size(steps: int, batch_size: int) -> int:
    """Minibatches per compiled call: about EXAMPLES_PER_CALL examples, preferably a divisor of
    the epoch's minibatches so that every call has the same shape (one XLA compilation)."""
    target = max(1, min(steps, EXAMPLES_PER_CALL // batch_size))
    divisor = max(d for d in range(1, target + 1) if steps % d == 0)
    return divisor if divisor * 2 >= target else target


def check_batch_size(config: params.StageConfig, train: Split) -> None:
    if config.batch_size > len(train.images):
        limit = f"at most the {len(train.images)} training images"
        raise params.not_allowed("batch_size", config.batch_size, limit)


def resume(
    model, backup: TrainingBackup | None, live_dir, rebuild
) -> tuple[object, Resumed | None]:
    """(model, the resumed state or None): the backup's state loaded into the model; a backup
    that could not be read was discarded, and the model, perhaps part-loaded, is rebuilt."""
    if backup is None or not backup.has_state():
        return model, None
    resumed = backup.restore(model, live_dir)
    return (model, resumed) if resumed is not None else (rebuild(), None)


@dataclass
class Callbacks:
    """The run's callbacks, in the order Keras calls them, and the stateful ones by name."""

    progress: Progress
    stopping: EarlyStopping
    snapshots: history.PosteriorSnapshots
    all: list[keras.callbacks.Callback]


def make_callbacks(config, model, steps, snapshot_images, live_dir, backup, resumed, report):
    objective = model.objective_name
    progress = Progress(config.epochs, steps * config.batch_size, objective, report)
    stopping = EarlyStopping(objective, config.patience)
    snapshots = history.PosteriorSnapshots(snapshot_images, config.seed)
    stateful = {"progress": progress}
    if config.ema:  # validation runs on the average (swapped in around it); at an epoch's end
        stateful["ema"] = SwapEMAWeights()  # it is swapped in before early stopping and snapshots
    stateful.update(stopping=stopping, snapshots=snapshots)
    callbacks = [NonFiniteGuard(config.learning_rate), *stateful.values()]
    if live_dir is not None:
        callbacks.append(history.LiveCurves(live_dir, objective, resume=resumed is not None))
    if backup is not None:  # last: it saves what the others updated, and restores after them
        callbacks.append(backup.callback(resumed, stateful, live_dir))
    return Callbacks(progress, stopping, snapshots, callbacks)


def fit(
    config: params.StageConfig,
    train: Split,
    valid: Split,
    snapshot_images: np.ndarray,
    strategy: tf.distribute.Strategy | None = None,
    live_dir: Path | None = None,
    report=log,
    minibatches_per_call: int | None = None,
    backup: TrainingBackup | None = None,
) -> TrainingRun:
    """Train with ``config`` (validated train params) and return the model with the best weights.

    With ``backup``, the state after every epoch is saved there, and a state found there at the
    start is resumed from.
    """
    check_batch_size(config, train)
    strategy = strategy or tf.distribute.get_strategy()
    steps = len(train.images) // config.batch_size
    if minibatches_per_call is None:
        single = strategy.num_replicas_in_sync == 1
        minibatches_per_call = stack_size(steps, config.batch_size) if single else 1
    build = lambda: compiled_model(config, train, steps, strategy)
    model, resumed = resume(build(), backup, live_dir, rebuild=build)
    initial_epoch = resumed.epoch if resumed else 0
    if resumed:
        report(f"resuming from epoch {initial_epoch} (backup {backup.directory})")
        stopping = resumed.states["stopping"].values
        if stopping["stopped_epoch"]:  # it had stopped early: no more epochs
            initial_epoch = config.epochs
    callbacks = make_callbacks(
        config, model, steps, snapshot_images, live_dir, backup, resumed, report
    )
    device = devices.describe(strategy)
    report(
        f"training on {device}: {steps} minibatches of {config.batch_size} per epoch, "
        f"{minibatches_per_call} per compiled call, objective {model.objective_name}"
    )
    model.fit(
        training_batches(
            train,
            config.batch_size,
            minibatches_per_call,
            config.seed,
            config.epochs,
            initial_epoch,
        ),
        validation_data=validation_batches(valid.images),
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=math.ceil(steps / minibatches_per_call),
        callbacks=callbacks.all,
        verbose=0,
        shuffle=False,
    )
    stopping = callbacks.stopping
    best_epoch = stopping.best_epoch + 1 if stopping.best_weights is not None else initial_epoch
    records = callbacks.progress.records
    return TrainingRun(model, records, best_epoch, callbacks.snapshots, device, initial_epoch)


def training_metrics(run: TrainingRun) -> dict:
    """metrics/train.json: the kept epoch's bounds, the epochs run and the timings (nats per
    example; seconds)."""
    best = run.records[run.best_epoch - 1].logs
    steady = run.records[1:] or run.records  # the first epoch includes XLA compilation
    train_seconds = statistics.median(r.train_seconds for r in steady)
    return {
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.records),
        "best_valid_elbo": round(best["val_elbo"], 4),
        "best_valid_kl": round(best["val_kl"], 4),
        "train_elbo_at_best": round(best["elbo"], 4),
        **({"best_valid_iwae": round(best["val_iwae"], 4)} if "val_iwae" in best else {}),
        "seconds_per_epoch": round(statistics.median(r.seconds for r in steady), 3),
        "first_epoch_seconds": round(run.records[0].seconds, 3),
        "train_examples_per_second": round(run.records[0].examples / train_seconds, 1),
        "seconds_total": round(sum(r.seconds for r in run.records), 2),
        "resumed_from_epoch": run.resumed_from_epoch,
        "device": run.device,
    }


def snapshot_subset(test: Split, seed: int, size: int = SNAPSHOT_EXAMPLES) -> np.ndarray:
    """A fixed, seeded subset of test images (sorted indices) whose posterior is followed."""
    size = min(size, len(test.images))
    return np.sort(np.random.default_rng(seed).choice(len(test.images), size, replace=False))
