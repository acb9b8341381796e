"""Stage train: fit the VAE on the prepared training split, keep the best networks.

Reads data/prepared/. Writes
  models/           the networks and the posterior snapshots (``latent.records.model_files``)
  dvclive/          per-epoch curves (dvc plots, dvc exp show; ``latent.records.history``),
                    in place after every epoch, so that `dvc plots show`, DVC's VS Code extension
                    and DVC Studio see a run while it trains; a run that fails or is killed may
                    leave the curves of its completed epochs there (resuming appends to them)
  metrics/train.json  the kept epoch's valid bound, epochs, timings and device (no stage reads it)
Every output but dvclive/ is written all at once at the end (``latent.records.atomic``).
Training (``latent.training.fit``) stops early after ``patience`` epochs without improvement; a
run that is killed resumes from its last completed epoch when the stage runs again with the same
params, code and data (``latent.records.backup``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latent.data.datasets import load_split
from latent.model import vae
from latent.plumbing import devices, params
from latent.plumbing.runtime import log, run_stage
from latent.records import history, model_files
from latent.records.atomic import StagedOutputs
from latent.records.backup import TrainingBackup
from latent.training.fit import fit, snapshot_subset, training_metrics

METRICS = Path("metrics/train.json")


def main() -> None:
    config = params.load("train")
    train, valid, test = (load_split(name) for name in ("train", "valid", "test"))
    indices = snapshot_subset(test, config.seed)
    strategy = devices.choose_strategy()
    backup = TrainingBackup.for_run(config, train, valid, test)
    with StagedOutputs() as out:
        snapshot_images = test.images[indices].astype(np.float32)
        run = fit(config, train, valid, snapshot_images, strategy, history.LIVE, backup=backup)
        metrics = training_metrics(run)
        models = out.directory(model_files.MODELS)
        networks = run.model.networks
        model_files.save_networks(networks, models)
        samples = vae.mean_samples(networks)
        history.save_snapshots(models, run.snapshots, test.labels[indices], indices, samples)
        out.json(METRICS, metrics)
    backup.discard()
    log(
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}: valid ELBO "
        f"{metrics['best_valid_elbo']:.2f} nats; {metrics['train_examples_per_second']:,.0f} "
        f"examples/s on {metrics['device']}; wrote {model_files.MODELS}/, {METRICS}, "
        f"{history.LIVE}/"
    )


if __name__ == "__main__":
    run_stage(main)
