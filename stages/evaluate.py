"""Stage evaluate: ELBO and importance-sampled log p(x) of the trained model, test and valid.

``eval_samples`` is k on the test set (the IWAE protocol uses 5000), ``valid_eval_samples`` on
the validation set; each split draws from its own random stream (``streams``). Loads the saved
networks from models/ (not the training code's objects) and the prepared splits. Writes
  metrics/evaluate.json   flat keys: {test,valid}_{elbo,log_px,nll,kl,expected_log_likelihood},
                          eval_samples, valid_eval_samples, seconds, device
                          (nats per example, means over the split)
  With a flow posterior the KL (and so the ELBO) is a Monte Carlo estimate over the k samples.
  metrics/per_digit.csv   mean log p(x), ELBO and KL of the test digits, by label
  metrics/kl_per_dimension.csv   by latent dimension, the largest KL first: the variance of its
                          posterior mean over the test images, whether it is an active unit, and
                          (Gaussian q) its mean KL(q(z_u|x) || N(0, 1))
  evaluate.json also counts the active units (``latent.estimators.active_units``).
  data/estimates/evaluate.csv   per test image: its log p(x), ELBO and KL (DVC-cached), so that
                          ``tools/results.py compare`` pairs two runs over every test image
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latent.data.datasets import load_split, per_digit_means
from latent.estimators import active_units
from latent.estimators.importance_sampling import ImportanceSampler
from latent.plumbing import devices, params
from latent.plumbing.runtime import log, run_stage
from latent.records import model_files
from latent.records.atomic import StagedOutputs

METRICS = Path("metrics/evaluate.json")
PER_DIGIT = Path("metrics/per_digit.csv")
KL_PER_DIMENSION = Path("metrics/kl_per_dimension.csv")
PER_IMAGE = Path("data/estimates/evaluate.csv")
# split -> (the param that is its k, the random stream it draws from)
SPLITS = {
    "test": ("eval_samples", "importance_sampling"),
    "valid": ("valid_eval_samples", "validation_importance_sampling"),
}


def evaluate_split(sampler: ImportanceSampler, images: np.ndarray, name: str, report=log):
    """Per-example values (nats) for one split, with a progress line about every 10%."""
    start = time.perf_counter()
    next_report = [0.1]

    def progress(done, total):
        if done / total >= next_report[0] or done == total:
            elapsed = time.perf_counter() - start
            report(
                f"{name}: {done}/{total} examples, k = {sampler.k}, {elapsed:.0f} s elapsed, "
                f"about {elapsed / done * (total - done):.0f} s left"
            )
            next_report[0] = math.floor(done / total * 10 + 1) / 10

    return sampler(images.astype(np.float32), progress=progress)


def split_metrics(name: str, values: dict[str, np.ndarray]) -> dict[str, float]:
    means = {key: float(np.mean(array, dtype=np.float64)) for key, array in values.items()}
    return {
        f"{name}_elbo": round(means["elbo"], 4),
        f"{name}_log_px": round(means["log_px"], 4),
        f"{name}_nll": round(-means["log_px"], 4),
        f"{name}_kl": round(means["kl"], 4),
        f"{name}_expected_log_likelihood": round(means["expected_log_likelihood"], 4),
    }


def per_digit_table(labels: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    return per_digit_means(labels, {name: values[name] for name in ("log_px", "elbo", "kl")})


def per_image_table(labels: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per test image, in order: its index, digit, and log p(x), ELBO and KL (nats)."""
    return pd.DataFrame(
        {
            "test_index": np.arange(len(labels)),
            "digit": labels.astype(int),
            **{name: values[name] for name in ("log_px", "elbo", "kl")},
        }
    )


def main() -> None:
    config = params.load("evaluate")
    networks = model_files.load_networks()
    start = time.perf_counter()
    metrics, per_digit, per_image = {}, None, None
    for name, (samples_key, stream) in SPLITS.items():
        split = load_split(name)
        k = getattr(config, samples_key)
        sampler = ImportanceSampler(networks, k, config.seed, purpose=stream)
        values = evaluate_split(sampler, split.images, name)
        metrics.update(split_metrics(name, values))
        log(
            f"{name}: ELBO {metrics[f'{name}_elbo']:.2f}, log p(x) {metrics[f'{name}_log_px']:.2f} "
            f"nats (k = {k})"
        )
        if name == "test":
            per_digit = per_digit_table(split.labels, values)
            per_image = per_image_table(split.labels, values)
            dimensions = active_units.per_dimension(networks, split.images, config.seed)
    metrics["active_units"] = int(dimensions["active"].sum())
    metrics["active_unit_threshold"] = active_units.ACTIVITY_THRESHOLD
    log(f"{metrics['active_units']} of {len(dimensions)} latent units active")
    metrics["eval_samples"] = config.eval_samples
    metrics["valid_eval_samples"] = config.valid_eval_samples
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["device"] = devices.describe()
    with StagedOutputs() as out:
        out.json(METRICS, metrics)
        per_digit.to_csv(out.file(PER_DIGIT), index=False)
        dimensions.to_csv(out.file(KL_PER_DIMENSION), index=False)
        per_image.to_csv(out.file(PER_IMAGE), index=False)
    log(f"wrote {METRICS}, {PER_DIGIT}, {KL_PER_DIMENSION} and {PER_IMAGE}")


if __name__ == "__main__":
    run_stage(main)
