"""Training that survives being killed: the train stage's state, saved as it trains, and resuming.

After the first epoch, and after each later epoch that ends at least ``every_seconds`` after the
last save (``SAVE_EVERY_SECONDS`` for the train stage), the state is written to
``.train-backup/<key>/`` (git- and DVC-ignored, not a
stage output) in the root of the repository the run belongs to (``backups``): the model and
optimizer variables (Keras ``save_weights``, which includes Adam's moments, the step counter
and the EMA slots), early stopping's best weights, best value and patience counter, the
progress records, the posterior snapshots so far and the dvclive curves.
The directory is written beside its final place and renamed into it (``atomic.replace``), so a
SIGKILL at any moment leaves either the previous save's state or this one's, never a mix. (Keras'
``BackupAndRestore`` writes the weights and the epoch number as two files, one after the other,
and does not keep early stopping's state.) A state that cannot be read (a full disk, a damaged
file) is discarded with a warning, and training starts from the beginning.

``key`` hashes the train params, the source of the modules dvc.yaml lists as the train stage's
dependencies (``training_code``: the code DVC re-runs train for, so a change elsewhere, in an
estimator or a figure, keeps a stopped run resumable) and the prepared splits, so a run with
other params, training code or data never resumes from another run's state. Because every
random draw, the data order and the schedules are keyed by the optimizer step or the epoch
number, a resumed run ends with bit-identical weights and metrics to an uninterrupted one on the
same machine. The backup is removed when the stage completes; ``rm -r .train-backup`` discards
any left behind.

A queued experiment (``dvc exp run --queue``) or a ``--temp`` one runs in a temporary copy of the
repository under .dvc/tmp/exps/, which DVC deletes when the run ends, fails or is killed; DVC
gives its stage commands $DVC_ROOT, the parent repository's root, and the backup lives there, so
that the same experiment queued again resumes where the killed one stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from latent.plumbing import pipeline
from latent.plumbing.params import StageConfig
from latent.plumbing.pipeline import ROOT, BadFile, reading
from latent.plumbing.runtime import interrupts_deferred, log
from latent.records import atomic

BACKUPS = Path(".train-backup")  # in the repository's root
WEIGHTS = "model.weights.h5"  # model and optimizer variables
ARRAYS = "arrays.npz"  # early stopping's best weights, posterior snapshots
STATE = "state.json"  # epoch, early stopping's counters, progress records
CURVES = "dvclive"
SAVE_EVERY_SECONDS = 120.0
"""The train stage's cadence: a killed run loses at most about two minutes of training. Saving
after every epoch cost 4 s of a 14 s epoch by epoch 600 of a latent-50 run, because the state
holds every epoch's posterior snapshot so far (2,000 images x 50 latents, 400 kB per epoch)."""


def backups() -> Path:
    """The backups' directory: in $DVC_ROOT, the root of the repository a DVC stage command runs
    for (a temporary copy's parent repository for queued and --temp experiments), else in the
    working directory."""
    return Path(os.environ.get("DVC_ROOT", ".")) / BACKUPS


def training_code() -> list[Path]:
    """The Python modules dvc.yaml lists as the train stage's dependencies."""
    return [ROOT / dep for dep in pipeline.stages()["train"]["deps"] if dep.endswith(".py")]


def run_key(config: StageConfig, arrays: list[np.ndarray], code: list[Path] | None = None) -> str:
    """sha256 of the params, the source of the training code (``training_code()`` unless
    given) and the data, as 16 hex digits."""
    digest = hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode())
    for path in sorted(training_code() if code is None else code):
        digest.update(path.name.encode() + path.read_bytes())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class CallbackState(NamedTuple):
    """A stateful callback's part of the backup: JSON-able ``values`` and named ``arrays``."""

    values: dict
    arrays: dict[str, np.ndarray]


@dataclass
class Resumed:
    """A saved state: the epochs completed and, for each stateful callback, its state."""

    epoch: int
    states: dict[str, CallbackState]


class TrainingBackup:
    """The backup directory of one run (params, code, data) and how to write and read it.

    Callbacks whose state must survive give ``backup_state() -> (values, arrays)``, a JSON-able
    dict and a dict of named arrays, and take them back as ``restore_backup_state(state)`` with
    ``state`` a ``CallbackState``.
    """

    def __init__(self, directory: Path, every_seconds: float = 0.0):
        self.directory = Path(directory)
        self.every_seconds = every_seconds  # 0: after every epoch

    @classmethod
    def for_run(cls, config: StageConfig, *splits) -> TrainingBackup:
        """The backup of a run with these train params on these splits (and this code), saved
        every ``SAVE_EVERY_SECONDS``."""
        arrays = [a for split in splits for a in (split.images, split.labels)]
        return cls(backups() / run_key(config, arrays), SAVE_EVERY_SECONDS)

    def _saved(self) -> Path | None:
        """The directory holding the last complete state (the previous one if a kill fell
        between the two renames of ``save``)."""
        for path in (self.directory, _old(self.directory)):
            if (path / STATE).exists():
                return path
        return None

    def has_state(self) -> bool:
        return self._saved() is not None

    def restore(self, model: keras.Model, live_dir: Path | None) -> Resumed | None:
        """Load the saved model and optimizer variables and the curves, if a state was saved.

        A state that cannot be read is discarded with a warning and None returned; the model's
        variables may then have been partly overwritten: build it afresh.
        """
        saved = self._saved()
        if saved is None:
            return None
        try:
            return self._read(saved, model, live_dir)
        except BadFile as e:
            log(f"warning: {e}; discarding the training backup, training from the first epoch")
            self.discard()
            return None

    def _read(self, saved: Path, model: keras.Model, live_dir: Path | None) -> Resumed:
        with reading(saved / STATE, "JSON"):
            state = json.loads((saved / STATE).read_text(encoding="utf-8"))
            epoch, callbacks = int(state["epoch"]), state["callbacks"]
        arrays = atomic.load_npz(saved / ARRAYS)
        with reading(saved / WEIGHTS, "the model's saved weights"):
            model.load_weights(saved / WEIGHTS)
        if live_dir is not None and (saved / CURVES).exists():
            shutil.copytree(saved / CURVES, live_dir, dirs_exist_ok=True)
        states = {
            name: CallbackState(
                values,
                {k.split(SEP, 1)[1]: a for k, a in arrays.items() if k.startswith(name + SEP)},
            )
            for name, values in callbacks.items()
        }
        return Resumed(epoch, states)

    def save(self, epoch: int, model: keras.Model, stateful: dict, live_dir: Path | None):
        """The state after ``epoch`` epochs, replacing the previous one all at once. Ctrl-C
        waits until it is in place (a second or so), so that it leaves no partial state behind."""
        with interrupts_deferred():
            self._write(epoch, model, stateful, live_dir)

    def _write(self, epoch: int, model: keras.Model, stateful: dict, live_dir: Path | None):
        staging = _staging(self.directory)
        atomic.remove(staging)
        staging.mkdir(parents=True)
        model.save_weights(staging / WEIGHTS)
        values, arrays = {}, {}
        for name, callback in stateful.items():
            state = CallbackState(*callback.backup_state())
            values[name] = state.values
            arrays.update({f"{name}{SEP}{key}": array for key, array in state.arrays.items()})
        atomic.save_npz(staging / ARRAYS, **arrays)
        state = {"epoch": epoch, "callbacks": values}
        (staging / STATE).write_text(json.dumps(state), encoding="utf-8")
        if live_dir is not None and live_dir.exists():
            shutil.copytree(live_dir, staging / CURVES)
        atomic.replace(staging, self.directory, _old(self.directory))

    def callback(self, resumed: Resumed | None, stateful: dict, live_dir: Path | None):
        return BackupCallback(self, resumed, stateful, live_dir)

    def discard(self) -> None:
        for path in (self.directory, _staging(self.directory), _old(self.directory)):
            atomic.remove(path)


SEP = "__"


def _staging(directory: Path) -> Path:
    return directory.with_name(directory.name + ".staging")


def _old(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


class BackupCallback(keras.callbacks.Callback):
    """Saves the state after the first epoch and then after each epoch that ends at least
    ``backup.every_seconds`` after the last save. On train begin (where callbacks reset
    themselves; this one comes last) it puts a resumed state back into the stateful callbacks."""

    def __init__(
        self, backup: TrainingBackup, resumed: Resumed | None, stateful: dict, live_dir: Path | None
    ):
        super().__init__()
        self.backup = backup
        self.resumed = resumed
        self.stateful = stateful
        self.live_dir = live_dir
        self.last_save = -float("inf")  # time.monotonic() of the last save: the first epoch saves

    def on_train_begin(self, logs=None):
        if self.resumed is not None:
            for name, callback in self.stateful.items():
                callback.restore_backup_state(self.resumed.states[name])

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self.last_save < self.backup.every_seconds:
            return
        self.backup.save(epoch + 1, self.model, self.stateful, self.live_dir)
        self.last_save = time.monotonic()
        log(f"saved the training state after epoch {epoch + 1} in {self.backup.directory}")
