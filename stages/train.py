"""Stage train: fit the VAE on the prepared training split, keep the best networks.

Params: latent_dim, hidden_units, activation, posterior, flow_steps, epochs, batch_size,
learning_rate, lr_schedule, kl_warmup_epochs, ema, weight_decay, train_samples, gradient_estimator,
patience, seed. Reads data/prepared/. Writes
  models/inference_network.keras    encoder: x -> [loc, scale] (and the flow's context h) of q(z|x)
  models/generative_network.keras   decoder: z -> Bernoulli logits of p(x|z)
  models/posterior_flow.keras       the flow's networks (posterior: iaf only)
  models/posterior_snapshots.npz    posterior means of a fixed subset of test digits, every epoch
  dvclive/                          per-epoch curves (dvc plots, dvc exp show)
  metrics/train.json                best valid bound, epochs, timings and device (no stage reads it)
The validation bound is computed every epoch; training stops early after ``patience`` epochs
without improvement and the saved networks are those of the best epoch (with ``ema``, of the
weights' moving average). A run that is killed resumes from its last completed epoch when the
stage runs again with the same params, code and data (``backup.py``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages import devices, history, params, streams, vae
from stages.atomic import StagedOutputs
from stages.backup import TrainingBackup
from stages.datasets import INTENSITY, Split, binarize, load_split
from stages.runtime import StageError, log, run_stage

PARAMS = [
    "latent_dim",
    "hidden_units",
    "activation",
    "posterior",
    "flow_steps",
    "epochs",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "kl_warmup_epochs",
    "ema",
    "weight_decay",
    "train_samples",
    "gradient_estimator",
    "patience",
    "seed",
]
MODELS = Path("models")
METRICS = Path("metrics/train.json")

EXAMPLES_PER_CALL = 12_800  # minibatches stacked into one compiled call (a fit "step")
VALID_BATCH = 2_000
SNAPSHOT_EXAMPLES = 2_000
EMA_MOMENTUM = 0.999
IWAE_STAGES = 8  # Burda et al.: stage i of 3^i epochs at learning_rate * 10^(-i/7)


class TrainingDiverged(StageError):
    """The objective became NaN or infinite: nothing is saved."""


# --- input pipelines ------------------------------------------------------------------------


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


# --- callbacks ------------------------------------------------------------------------------


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops with TrainingDiverged as soon as a logged bound is NaN or infinite."""

    def __init__(self, learning_rate: float):
        super().__init__()
        self.learning_rate = learning_rate
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def _check(self, logs, where):
        for name, value in (logs or {}).items():
            if not math.isfinite(float(value)):
                raise TrainingDiverged(
                    f"training diverged in epoch {self.epoch} ({where}): {name} = {float(value)}; "
                    f"nothing was saved; try a smaller learning_rate (now {self.learning_rate})"
                )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, "training")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "validation")


@dataclass
class EpochRecord:
    epoch: int
    seconds: float
    train_seconds: float
    examples: int
    logs: dict = field(default_factory=dict)


class Progress(keras.callbacks.Callback):
    """One line per epoch: train and valid bounds, KL, examples/s; keeps the timings."""

    def __init__(self, epochs: int, examples_per_epoch: int, objective: str, report=log):
        super().__init__()
        self.epochs, self.examples, self.objective = epochs, examples_per_epoch, objective
        self.report = report
        self.records: list[EpochRecord] = []
        self.best = -math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch_end = time.perf_counter()  # after NonFiniteGuard has synced the step

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = {k: float(v) for k, v in (logs or {}).items()}
        train_seconds = self.last_batch_end - self.start
        record = EpochRecord(epoch + 1, now - self.start, train_seconds, self.examples, logs)
        self.records.append(record)
        valid = logs.get(f"val_{self.objective}", -math.inf)
        mark = "  *best" if valid > self.best else ""
        self.best = max(self.best, valid)
        bound = "ELBO" if self.objective == "elbo" else "IWAE bound"
        self.report(
            f"epoch {epoch + 1}/{self.epochs}: "
            f"train {bound} {logs.get(self.objective, math.nan):.2f}  valid {bound} {valid:.2f}"
            f"  valid KL {logs.get('val_kl', math.nan):.2f}"
            f"  {self.examples / record.train_seconds:,.0f} examples/s"
            f"  {record.seconds:.1f} s{mark}"
        )

    def backup_state(self):
        return {"records": [dataclasses.asdict(r) for r in self.records], "best": self.best}, {}

    def restore_backup_state(self, values, arrays):
        self.records = [EpochRecord(**record) for record in values["records"]]
        self.best = values["best"]


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on the validation bound, with its state in the training backup."""

    def __init__(self, objective: str, patience: int):
        super().__init__(
            f"val_{objective}", mode="max", patience=patience, restore_best_weights=True
        )

    def backup_state(self):
        values = {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }
        weights = {str(i): w for i, w in enumerate(self.best_weights or [])}
        return values, weights

    def restore_backup_state(self, values, arrays):
        self.wait, self.best, self.best_epoch = values["wait"], values["best"], values["best_epoch"]
        self.stopped_epoch = values["stopped_epoch"]
        self.best_weights = [arrays[str(i)] for i in range(len(arrays))] or None


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' swap of the weights' moving average into the model around validation, and from
    each epoch's end (early stopping's best weights, the snapshots) to the next epoch's start; the
    backup, saved at an epoch's end, records that the average is in the model."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def backup_state(self):
        return {"ema_weights_in_model": self._ema_weights_in_model}, {}

    def restore_backup_state(self, values, arrays):
        self._ema_weights_in_model = values["ema_weights_in_model"]


# --- training -------------------------------------------------------------------------------


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


def build_model(config: dict, train: Split, steps_per_epoch: int) -> vae.VariationalAutoencoder:
    networks = vae.make_networks(
        config["latent_dim"],
        config["hidden_units"],
        config["activation"],
        config["posterior"],
        config["flow_steps"],
        pixel_means(train),
    )
    model = vae.VariationalAutoencoder(
        networks,
        train_samples=config["train_samples"],
        seed=config["seed"],
        kl_warmup_steps=config["kl_warmup_epochs"] * steps_per_epoch,
        gradient_estimator=config["gradient_estimator"],
    )
    model.build((None, vae.PIXELS))
    return model


def learning_rate(config: dict, steps_per_epoch: int):
    """The learning rate, or a Keras schedule of it over optimizer steps.

    iwae: Burda et al.'s schedule scaled to ``epochs``: 8 stages, stage i lasting a 3^i / 3280
    share of the epochs, at learning_rate * 10^(-i/7). cosine: from learning_rate down to 0.
    """
    base, schedule = config["learning_rate"], config["lr_schedule"]
    total_steps = config["epochs"] * steps_per_epoch
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


def make_optimizer(config: dict, steps_per_epoch: int) -> keras.optimizers.Adam:
    """Adam at the scheduled learning rate; with ``ema``, keeping the weights' moving average; with
    ``weight_decay``, Keras' decoupled decay (each step multiplies every kernel by
    1 - learning rate * weight_decay, as AdamW does; biases are excluded)."""
    optimizer = keras.optimizers.Adam(
        learning_rate(config, steps_per_epoch),
        weight_decay=config["weight_decay"] or None,
        use_ema=config["ema"],
        ema_momentum=EMA_MOMENTUM,
    )
    if config["weight_decay"]:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def stack_size(steps: int, batch_size: int) -> int:
    """Minibatches per compiled call: about EXAMPLES_PER_CALL examples, preferably a divisor of
    the epoch's minibatches so that every call has the same shape (one XLA compilation)."""
    target = max(1, min(steps, EXAMPLES_PER_CALL // batch_size))
    divisor = max(d for d in range(1, target + 1) if steps % d == 0)
    return divisor if divisor * 2 >= target else target


def fit(
    config: dict,
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
    if config["batch_size"] > len(train.images):
        limit = f"at most the {len(train.images)} training images"
        raise params.not_allowed("batch_size", config["batch_size"], limit)
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    steps = len(train.images) // config["batch_size"]
    if minibatches_per_call is None:
        minibatches_per_call = 1 if replicas > 1 else stack_size(steps, config["batch_size"])
    calls_per_epoch = math.ceil(steps / minibatches_per_call)
    keras.utils.set_random_seed(config["seed"])
    with strategy.scope():
        model = build_model(config, train, steps)
        optimizer = make_optimizer(config, steps)
        model.compile(optimizer=optimizer, jit_compile=replicas == 1)
        optimizer.build(model.trainable_variables)
    resumed = backup.restore(model, live_dir) if backup is not None else None
    initial_epoch = resumed.epoch if resumed else 0
    if resumed:
        report(f"resuming from epoch {initial_epoch} (backup {backup.directory})")
        if resumed.states["stopping"][0]["stopped_epoch"]:  # it had stopped early: no more epochs
            initial_epoch = config["epochs"]

    objective = model.objective_name
    progress = Progress(config["epochs"], steps * config["batch_size"], objective, report)
    stopping = EarlyStopping(objective, config["patience"])
    snapshots = history.PosteriorSnapshots(snapshot_images, config["seed"])
    stateful = {"progress": progress}
    if config["ema"]:  # validation runs on the average (swapped in around it); at an epoch's end
        stateful["ema"] = SwapEMAWeights()  # it is swapped in before early stopping and snapshots
    stateful.update(stopping=stopping, snapshots=snapshots)
    callbacks = [NonFiniteGuard(config["learning_rate"]), *stateful.values()]
    if live_dir is not None:
        callbacks.append(history.LiveCurves(live_dir, objective, resume=resumed is not None))
    if backup is not None:  # last: it saves what the others updated, and restores after them
        callbacks.append(backup.callback(resumed, stateful, live_dir))
    device = devices.describe(strategy)
    report(
        f"training on {device}: {steps} minibatches of {config['batch_size']} per epoch, "
        f"{minibatches_per_call} per compiled call, objective {objective}"
    )
    model.fit(
        training_batches(
            train,
            config["batch_size"],
            minibatches_per_call,
            config["seed"],
            config["epochs"],
            initial_epoch,
        ),
        validation_data=validation_batches(valid.images),
        epochs=config["epochs"],
        initial_epoch=initial_epoch,
        steps_per_epoch=calls_per_epoch,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )
    best_epoch = stopping.best_epoch + 1 if stopping.best_weights is not None else initial_epoch
    return TrainingRun(model, progress.records, best_epoch, snapshots, device, initial_epoch)


def training_metrics(run: TrainingRun) -> dict:
    best = run.records[run.best_epoch - 1].logs
    steady = run.records[1:] or run.records  # the first epoch includes XLA compilation
    train_seconds = statistics.median(r.train_seconds for r in steady)
    objective = run.model.objective_name
    return {
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.records),
        "objective": objective,
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


def main() -> None:
    config = params.load(PARAMS)
    train, valid, test = (load_split(name) for name in ("train", "valid", "test"))
    indices = snapshot_subset(test, config["seed"])
    strategy = devices.choose_strategy()
    backup = TrainingBackup.for_run(config, train, valid, test)
    with StagedOutputs() as out:
        live_dir = out.directory(history.LIVE)
        snapshot_images = test.images[indices].astype(np.float32)
        run = fit(config, train, valid, snapshot_images, strategy, live_dir, backup=backup)
        metrics = training_metrics(run)
        models = out.directory(MODELS)
        networks = run.model.networks
        vae.save_networks(networks, models)
        how = vae.describe_posterior_means(networks)
        history.save_snapshots(models, run.snapshots, test.labels[indices], indices, how)
        out.json(METRICS, metrics)
    backup.discard()
    log(
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}: valid ELBO "
        f"{metrics['best_valid_elbo']:.2f} nats; {metrics['train_examples_per_second']:,.0f} "
        f"examples/s on {metrics['device']}; wrote {MODELS}/, {METRICS}, {history.LIVE}/"
    )


if __name__ == "__main__":
    run_stage(main)
