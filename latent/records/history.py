"""What the train stage records every epoch, and how later stages read it back.

Two records, each written here and read here (the files are the contract between train and
figures):
  dvclive/                        per-epoch curves through dvclive: plots/metrics/{train,valid}/
                                  <metric>.tsv with step = epoch, and params.yaml naming the
                                  objective whose best validation value picked the kept epoch.
                                  dvclive's own summary (metrics.json, the last epoch's values) is
                                  not kept: metrics/train.json, of the kept epoch, is the run's
                                  one summary
  models/posterior_snapshots.npz  posterior means of a fixed subset of test digits before training
                                  and after every epoch (figures/posterior_training.*)
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from latent.model import vae
from latent.plumbing.pipeline import bad_file, reading
from latent.records import atomic

LIVE = Path("dvclive")
CURVES = Path("plots/metrics")
OBJECTIVE_PARAM = "objective"
SNAPSHOTS_FILE = "posterior_snapshots.npz"


class LiveCurves(keras.callbacks.Callback):
    """Per-epoch curves through dvclive: train/<metric> and valid/<metric>, step = epoch.

    With ``resume`` the curves already in ``directory`` (from an interrupted run) are kept and
    the new epochs appended.

    Not ``dvclive.keras.DVCLiveCallback`` (dvclive 3.49), which writes through the same ``Live``:
    it names the validation curves ``eval/<metric>`` with no option to rename them (the plots in
    dvc.yaml and the figures read ``valid/``), numbers steps from 0 with its own counter rather
    than Keras' epoch (a resumed run continues the count only while dvclive/metrics.json
    survives), and always keeps that metrics.json, the last epoch's values, beside
    metrics/train.json, the kept epoch's.
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
        Path(self.live.metrics_file).unlink(missing_ok=True)  # the last epoch's: not the summary


def read_curve(split: str, metric: str, directory: Path = LIVE) -> pd.DataFrame:
    """One curve (columns step, <metric>) as LiveCurves wrote it."""
    path = directory / CURVES / split / f"{metric}.tsv"
    with reading(path, "a dvclive curve (tab-separated step and value)"):
        curve = pd.read_csv(path, sep="\t")
        curve = curve.astype({"step": int, metric: float})[["step", metric]]
    if curve.empty:
        raise bad_file(path, "no epochs in it")
    return curve


def read_objective(directory: Path = LIVE) -> str:
    """The training objective ("elbo" or "iwae") as LiveCurves recorded it."""
    path = directory / "params.yaml"
    with reading(path, "YAML"):
        objective = yaml.safe_load(path.read_text(encoding="utf-8"))[OBJECTIVE_PARAM]
    if objective not in ("elbo", "iwae"):
        raise bad_file(path, f"{OBJECTIVE_PARAM} is {objective!r}, expected elbo or iwae")
    return objective


class PosteriorSnapshots(keras.callbacks.Callback):
    """Posterior means E_q[z|x] of fixed images before training and after every epoch
    (``vae.posterior_means``: exact for the Gaussian, Monte Carlo with fixed noise for the flow)."""

    def __init__(self, images: np.ndarray, seed: int):
        super().__init__()
        self.x = np.asarray(images, np.float32)
        self.seed = seed
        self.epochs: list[int] = []
        self.means: list[np.ndarray] = []

    def _snapshot(self, epoch):
        self.epochs.append(epoch)
        self.means.append(vae.posterior_means(self.model.networks, self.x, self.seed))

    def on_train_begin(self, logs=None):
        self._snapshot(0)

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot(epoch + 1)

    def backup_state(self):
        return {}, self.arrays()

    def restore_backup_state(self, state):
        self.epochs = [int(e) for e in state.arrays["epochs"]]
        self.means = list(state.arrays["posterior_means"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "epochs": np.asarray(self.epochs, np.int32),
            "posterior_means": np.stack(self.means),
        }


SNAPSHOT_ARRAYS = ("epochs", "posterior_means", "labels", "test_indices", "mean_samples")


def save_snapshots(directory: Path, snapshots: PosteriorSnapshots, labels, test_indices, samples):
    """models/posterior_snapshots.npz: epochs (E,), posterior_means (E, N, L), labels (N,),
    test_indices (N,) into the test split, and mean_samples, the samples behind each mean
    (0: exact; ``vae.mean_samples``)."""
    atomic.save_npz(
        Path(directory) / SNAPSHOTS_FILE,
        **snapshots.arrays(),
        labels=np.asarray(labels),
        test_indices=np.asarray(test_indices),
        mean_samples=np.asarray(samples, np.int32),
    )


def load_snapshots(directory: Path) -> dict:
    path = Path(directory) / SNAPSHOTS_FILE
    arrays = atomic.load_npz(path)
    missing = [name for name in SNAPSHOT_ARRAYS if name not in arrays]
    if missing:
        raise bad_file(path, f"no {missing[0]} array in it")
    arrays["mean_samples"] = int(arrays["mean_samples"])
    return arrays
