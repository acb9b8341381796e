"""The callbacks of a training run: a NaN guard, one progress line per epoch, early stopping and
the swap of the weights' moving average, each keeping its state in the training backup
(``backup_state``/``restore_backup_state``)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import keras

from latent.plumbing.runtime import StageError, log
from latent.records.backup import CallbackState


class TrainingDiverged(StageError):
    """The objective became NaN or infinite: nothing is saved."""


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
        self.epochs = epochs
        self.examples = examples_per_epoch
        self.objective = objective
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

    def backup_state(self) -> tuple[dict, dict]:
        records = [dataclasses.asdict(r) for r in self.records]
        return {"records": records, "best": self.best}, {}

    def restore_backup_state(self, state: CallbackState):
        self.records = [EpochRecord(**record) for record in state.values["records"]]
        self.best = state.values["best"]


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on the validation bound, with its state in the training backup."""

    def __init__(self, objective: str, patience: int):
        super().__init__(
            f"val_{objective}", mode="max", patience=patience, restore_best_weights=True
        )

    def backup_state(self) -> tuple[dict, dict]:
        values = {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }
        weights = {str(i): w for i, w in enumerate(self.best_weights or [])}
        return values, weights

    def restore_backup_state(self, state: CallbackState):
        self.wait = state.values["wait"]
        self.best = state.values["best"]
        self.best_epoch = state.values["best_epoch"]
        self.stopped_epoch = state.values["stopped_epoch"]
        weights = state.arrays
        self.best_weights = [weights[str(i)] for i in range(len(weights))] or None


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' swap of the weights' moving average into the model around validation, and from
    each epoch's end (early stopping's best weights, the snapshots) to the next epoch's start; the
    backup, saved at an epoch's end, records that the average is in the model."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def backup_state(self) -> tuple[dict, dict]:
        return {"ema_weights_in_model": self._ema_weights_in_model}, {}

    def restore_backup_state(self, state: CallbackState):
        self._ema_weights_in_model = state.values["ema_weights_in_model"]
