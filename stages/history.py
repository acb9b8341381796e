"""What the train stage records every epoch, and how later stages read it back.

Two records, each written here and read here (the files are the contract between train and
figures):
  dvclive/                        per-epoch curves through dvclive: plots/metrics/{train,valid}/
                                  <metric>.tsv with step = epoch, and params.yaml naming the
                                  objective whose best validation value picked the kept epoch
  models/posterior_snapshots.npz  posterior means of a fixed subset of test digits before training
                                  and after every epoch (figures/posterior_training.*)
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from stages import atomic, vae
from stages.runtime import StageError

LIVE = Path("dvclive")
CURVES = Path("plots/metrics")
OBJECTIVE_PARAM = "objective"
SNAPSHOTS_FILE = "posterior_snapshots.npz"


class LiveCurves(keras.callbacks.Callback):
    """Per-epoch curves through dvclive: train/<metric> and valid/<metric>, step = epoch.

    With ``resume`` the curves already in ``directory`` (from an interrupted run) are kept and
    the new epochs appended.
    """

    def __init__(self, directory: Path, objective: str, resume: bool = False):
        super().__init__()
        from dvclive import Live

        self.live = Live(
            dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None, resume=resume
        )
        self.live.log_param(OBJECTIVE_PARAM, objective)

    def on_epoch_end(self, epoch, logs=None):
        self.live.step = epoch + 1
        for name, value in (logs or {}).items():
            split, metric = ("valid", name[4:]) if name.startswith("val_") else ("train", name)
            self.live.log_metric(f"{split}/{metric}", float(value))
        self.live.next_step()

    def on_train_end(self, logs=None):
        self.live.end()


def read_curve(split: str, metric: str, directory: Path = LIVE) -> pd.DataFrame:
    """One curve (columns step, <metric>) as LiveCurves wrote it."""
    path = directory / CURVES / split / f"{metric}.tsv"
    try:
        return pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise StageError(f"{path} not found: run the train stage first") from None


def read_objective(directory: Path = LIVE) -> str:
    """The training objective ("elbo" or "iwae") as LiveCurves recorded it."""
    path = directory / "params.yaml"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))[OBJECTIVE_PARAM]
    except (FileNotFoundError, TypeError, KeyError):
        raise StageError(f"{path} has no {OBJECTIVE_PARAM}: run the train stage first") from None


class PosteriorSnapshots(keras.callbacks.Callback):
    """Posterior means E_q[z|x] of fixed images before training and after every epoch (exact for
    the Gaussian; for the flow the mean of vae.MEAN_SAMPLES samples with fixed noise)."""

    def __init__(self, images: np.ndarray, seed: int):
        super().__init__()
        self.x = np.asarray(images, np.float32)
        self.seed = seed
        self.epochs: list[int] = []
        self.means: list[np.ndarray] = []

    def _snapshot(self, epoch):
        self.epochs.append(epoch)
        networks = self.model.networks
        self.means.append(vae.posterior_means_of(networks, self.x, self.seed))

    def on_train_begin(self, logs=None):
        self._snapshot(0)

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot(epoch + 1)

    def backup_state(self):
        return {}, self.arrays()

    def restore_backup_state(self, values, arrays):
        self.epochs = [int(e) for e in arrays["epochs"]]
        self.means = list(arrays["posterior_means"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "epochs": np.asarray(self.epochs, np.int32),
            "posterior_means": np.stack(self.means),
        }


def save_snapshots(directory: Path, snapshots: PosteriorSnapshots, labels, test_indices, how: str):
    """models/posterior_snapshots.npz: epochs (E,), posterior_means (E, N, L), labels (N,),
    test_indices (N,) into the test split, and ``how`` the means were computed (in words)."""
    atomic.save_npz(
        Path(directory) / SNAPSHOTS_FILE,
        **snapshots.arrays(),
        labels=np.asarray(labels),
        test_indices=np.asarray(test_indices),
        how=np.asarray(how),
    )


def load_snapshots(directory: Path) -> dict:
    path = Path(directory) / SNAPSHOTS_FILE
    if not path.exists():
        raise StageError(f"{path} not found: run the train stage first")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["how"] = str(arrays["how"])
    return arrays
