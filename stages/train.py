"""Stage train: fit the VAE on the prepared training split, keep the best networks.

Params: latent_dim, hidden_units, activation, epochs, batch_size, learning_rate, train_samples,
patience, seed. Reads data/prepared/. Writes
  models/inference_network.keras    encoder: x -> [loc, scale] of q(z|x)
  models/generative_network.keras   decoder: z -> Bernoulli logits of p(x|z)
  models/posterior_snapshots.npz    posterior means of a fixed subset of test digits, every epoch
  metrics/train.json                best valid ELBO, epochs, seconds/epoch, examples/s, device
  dvclive/                          per-epoch curves (dvc plots, dvc exp show)
The validation ELBO is computed every epoch; training stops early after ``patience`` epochs
without improvement and the saved networks are those of the best epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages import devices, params, vae
from stages.atomic import StagedOutputs
from stages.datasets import INTENSITY, Split, load_split
from stages.runtime import StageError, log, run_stage

PARAMS = [
    "latent_dim",
    "hidden_units",
    "activation",
    "epochs",
    "batch_size",
    "learning_rate",
    "train_samples",
    "patience",
    "seed",
]
MODELS = Path("models")
METRICS = Path("metrics/train.json")
LIVE = Path("dvclive")
SNAPSHOTS = "posterior_snapshots.npz"

EXAMPLES_PER_CALL = 12_800  # minibatches stacked into one compiled call (a fit "step")
VALID_BATCH = 2_000
SNAPSHOT_EXAMPLES = 2_000


class TrainingDiverged(StageError):
    """The objective became NaN or infinite: nothing is saved."""


# --- input pipelines ------------------------------------------------------------------------


def training_batches(images: np.ndarray, batch_size: int, minibatches_per_call: int, seed: int):
    """Shuffled minibatches, ``minibatches_per_call`` of them stacked per element (S, B, 784).

    The images stay resident as one uint8 tensor; each epoch only a permutation of indices is
    shuffled and gathered. The remainder that does not fill a minibatch is left out each epoch
    (a different one every epoch). The order of minibatches does not depend on the stacking.
    """
    pixels = tf.constant(images)
    batches = (
        tf.data.Dataset.range(len(images))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
    )
    if minibatches_per_call > 1:
        batches = batches.batch(minibatches_per_call)
    return batches.map(lambda index: tf.gather(pixels, index)).prefetch(2)


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
        self.epochs, self.examples, self.objective, self.report = (
            epochs,
            examples_per_epoch,
            objective,
            report,
        )
        self.records: list[EpochRecord] = []
        self.best = -math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last_batch_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch_end = time.perf_counter()  # after NonFiniteGuard has synced the step

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = {k: float(v) for k, v in (logs or {}).items()}
        record = EpochRecord(
            epoch + 1, now - self.start, self.last_batch_end - self.start, self.examples, logs
        )
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


class LiveCurves(keras.callbacks.Callback):
    """Per-epoch curves through dvclive: train/<metric> and valid/<metric>, step = epoch."""

    def __init__(self, directory: Path):
        super().__init__()
        from dvclive import Live

        self.live = Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None)

    def on_epoch_end(self, epoch, logs=None):
        self.live.step = epoch + 1
        for name, value in (logs or {}).items():
            split, metric = ("valid", name[4:]) if name.startswith("val_") else ("train", name)
            self.live.log_metric(f"{split}/{metric}", float(value))
        self.live.next_step()

    def on_train_end(self, logs=None):
        self.live.end()


class PosteriorSnapshots(keras.callbacks.Callback):
    """Posterior means E_q[z|x] of fixed images before training and after every epoch."""

    def __init__(self, images: np.ndarray):
        super().__init__()
        self.x = tf.constant(images, tf.float32)
        self.epochs: list[int] = []
        self.means: list[np.ndarray] = []

    def _snapshot(self, epoch):
        self.epochs.append(epoch)
        self.means.append(np.asarray(self.model.inference_network(self.x)[0], np.float32))

    def on_train_begin(self, logs=None):
        self._snapshot(0)

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot(epoch + 1)


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    model: vae.VariationalAutoencoder
    records: list[EpochRecord]
    best_epoch: int
    snapshots: PosteriorSnapshots
    device: str


def build_model(p: dict, dynamic_binarization: bool) -> vae.VariationalAutoencoder:
    model = vae.VariationalAutoencoder(
        vae.make_inference_network(p["latent_dim"], p["hidden_units"], p["activation"]),
        vae.make_generative_network(p["latent_dim"], p["hidden_units"], p["activation"]),
        train_samples=p["train_samples"],
        seed=p["seed"],
        dynamic_binarization=dynamic_binarization,
    )
    model.build((None, vae.PIXELS))
    return model


def stack_size(steps: int, batch_size: int) -> int:
    """Minibatches per compiled call: about EXAMPLES_PER_CALL examples, preferably a divisor of
    the epoch's minibatches so that every call has the same shape (one XLA compilation)."""
    target = max(1, min(steps, EXAMPLES_PER_CALL // batch_size))
    divisor = max(d for d in range(1, target + 1) if steps % d == 0)
    return divisor if divisor * 2 >= target else target


def fit(
    p: dict,
    train: Split,
    valid: Split,
    snapshot_images: np.ndarray,
    strategy: tf.distribute.Strategy | None = None,
    live_dir: Path | None = None,
    report=log,
    minibatches_per_call: int | None = None,
) -> TrainingRun:
    """Train with ``p`` (validated train params) and return the model with the best weights."""
    if p["batch_size"] > len(train.images):
        raise params.not_allowed(
            "batch_size", p["batch_size"], f"at most the {len(train.images)} training images"
        )
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    steps = len(train.images) // p["batch_size"]
    if minibatches_per_call is None:
        minibatches_per_call = 1 if replicas > 1 else stack_size(steps, p["batch_size"])
    keras.utils.set_random_seed(p["seed"])
    with strategy.scope():
        model = build_model(p, dynamic_binarization=train.pixels == INTENSITY)
        model.compile(
            optimizer=keras.optimizers.Adam(p["learning_rate"]), jit_compile=replicas == 1
        )
    progress = Progress(p["epochs"], steps * p["batch_size"], model.objective_name, report)
    stopping = keras.callbacks.EarlyStopping(
        monitor=f"val_{model.objective_name}",
        mode="max",
        patience=p["patience"],
        restore_best_weights=True,
    )
    snapshots = PosteriorSnapshots(snapshot_images)
    callbacks = [NonFiniteGuard(p["learning_rate"]), progress, stopping, snapshots]
    if live_dir is not None:
        callbacks.append(LiveCurves(live_dir))
    device = devices.describe(strategy)
    report(
        f"training on {device}: {steps} minibatches of {p['batch_size']} per epoch, "
        f"{minibatches_per_call} per compiled call, objective {model.objective_name}"
    )
    model.fit(
        training_batches(train.images, p["batch_size"], minibatches_per_call, p["seed"]),
        validation_data=validation_batches(valid.images),
        epochs=p["epochs"],
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )
    best_epoch = (
        (stopping.best_epoch + 1) if stopping.best_weights is not None else len(progress.records)
    )
    return TrainingRun(model, progress.records, best_epoch, snapshots, device)


def training_metrics(run: TrainingRun) -> dict:
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
        "device": run.device,
    }


def snapshot_subset(test: Split, seed: int, size: int = SNAPSHOT_EXAMPLES) -> np.ndarray:
    """A fixed, seeded subset of test images (sorted indices) whose posterior is followed."""
    size = min(size, len(test.images))
    return np.sort(np.random.default_rng(seed).choice(len(test.images), size, replace=False))


def main() -> None:
    p = params.load(PARAMS)
    train, valid, test = (load_split(name) for name in ("train", "valid", "test"))
    indices = snapshot_subset(test, p["seed"])
    strategy = devices.choose_strategy()
    with StagedOutputs() as out:
        live_dir = out.directory(LIVE)
        run = fit(p, train, valid, test.images[indices].astype(np.float32), strategy, live_dir)
        metrics = training_metrics(run)
        models = out.directory(MODELS)
        vae.save_networks(run.model.inference_network, run.model.generative_network, models)
        np.savez(
            models / SNAPSHOTS,
            epochs=np.asarray(run.snapshots.epochs, np.int32),
            posterior_means=np.stack(run.snapshots.means),
            labels=test.labels[indices],
            test_indices=indices,
        )
        out.json(METRICS, metrics)
    log(
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}: valid ELBO "
        f"{metrics['best_valid_elbo']:.2f} nats; {metrics['train_examples_per_second']:,.0f} "
        f"examples/s on {metrics['device']}; wrote {MODELS}/, {METRICS}, {LIVE}/"
    )


if __name__ == "__main__":
    run_stage(main)
