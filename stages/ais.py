"""Stage ais: log p(x) by annealed importance sampling, checked against importance sampling,
quadrature and bidirectional Monte Carlo.

On the first ``ais_examples`` test images AIS (``latent.estimators.ais``) runs once for each
number of steps in ``ais_steps`` (the last is the estimate), beside the importance-sampled
log p(x) with ``eval_samples`` samples on the same images (the evaluate stage's draws). With the
inference gap's per-image estimates it gives the gaps with the AIS log p(x) and, for latent_dim 2,
AIS against the exact log p(x) by quadrature. With ``bdmc_examples`` it simulates that many images
from the model and sandwiches their log p(x) between forward and reverse AIS at every number of
steps.

Reads models/, the prepared test split and data/estimates/inference_gap.csv. Writes
  metrics/ais.json            the means (nats per example), the comparisons, acceptance, time
  metrics/ais_curve.csv       by number of steps: the mean AIS estimate and the BDMC bounds
  data/estimates/ais.csv      per image: AIS and IS log p(x), HMC acceptance (DVC-cached)
  figures/ais_steps.png       the estimate and the BDMC bounds against the number of steps
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from latent.data.datasets import load_split
from latent.estimators import ais
from latent.estimators.importance_sampling import ImportanceSampler
from latent.plotting import ais as ais_figures
from latent.plotting.canvas import save_png
from latent.plumbing import devices, params
from latent.plumbing.pipeline import bad_file, reading
from latent.plumbing.runtime import log, run_stage
from latent.records import model_files
from latent.records.atomic import StagedOutputs

METRICS = Path("metrics/ais.json")
CURVE = Path("metrics/ais_curve.csv")
PER_IMAGE = Path("data/estimates/ais.csv")
FIGURE = Path("figures/ais_steps.png")
GAP_ESTIMATES = Path("data/estimates/inference_gap.csv")
GAP_COLUMNS = ("test_index", "log_px", "log_px_quadrature", "elbo_amortized", "elbo_refined")


def sampler(config, networks) -> ais.AnnealedImportanceSampler:
    return ais.AnnealedImportanceSampler(
        networks,
        config.ais_chains,
        config.ais_leapfrog_steps,
        config.ais_schedule,
        config.seed,
        initial=config.ais_initial,
    )


def progress_lines(what: str, steps: int, total: int):
    """A callback (images done, steps done) writing a line each time a tile finishes."""
    start = time.perf_counter()

    def report(done, step):
        if step == steps:
            log(
                f"{what}, {steps} steps: {done}/{total} images, {time.perf_counter() - start:.0f} s"
            )

    return report


def read_gap_estimates(count: int) -> pd.DataFrame:
    """The inference gap's per-image estimates of the first ``count`` test images."""
    with reading(GAP_ESTIMATES, "the inference gap's per-image CSV"):
        table = pd.read_csv(GAP_ESTIMATES)[list(GAP_COLUMNS)]
    if not np.array_equal(table["test_index"], np.arange(len(table))):
        raise bad_file(GAP_ESTIMATES, "test_index is not 0, 1, 2, ...")
    return table.iloc[:count]


def forward_curve(estimator, steps_list, images):
    """(the last run's per-image values, one curve row per number of steps)."""
    rows, values = [], None
    for steps in steps_list:
        start = time.perf_counter()
        values = estimator(images, steps, progress_lines("AIS", steps, len(images)))
        seconds = time.perf_counter() - start
        rows.append(
            {
                "steps": steps,
                "ais_log_px": round(float(values["log_px"].mean()), 4),
                "acceptance": round(float(values["acceptance"].mean()), 4),
                "seconds": round(seconds, 1),
            }
        )
        log(
            f"AIS, {steps} steps: mean log p(x) {rows[-1]['ais_log_px']:.3f} nats ({seconds:.0f} s)"
        )
    return values, rows


def bdmc_curve(estimator, count: int, seed: int, rows) -> dict:
    """Forward and reverse AIS on ``count`` simulated images at every number of steps, into
    ``rows``; the sandwich at the largest."""
    x, z = ais.simulate(estimator.networks, count, seed)
    found = {}
    for row in rows:
        steps = row["steps"]
        lower = estimator(x, steps, progress_lines("BDMC forward", steps, len(x)))["log_px"]
        upper = estimator.reverse(x, z, steps, progress_lines("BDMC reverse", steps, len(x)))
        found = ais.sandwich(lower, upper["log_px"])
        row.update(found)
        log(f"BDMC, {row['steps']} steps: [{found['bdmc_lower']:.3f}, {found['bdmc_upper']:.3f}]")
    return {"bdmc_examples": len(x), **found}


def comparisons(values, is_log_px, gaps: pd.DataFrame) -> dict:
    """AIS against IS, against quadrature where there is one, and the gaps with AIS."""
    found = ais.difference(values["log_px"], is_log_px, "is")
    both = len(gaps)
    ais_log_px = values["log_px"][:both]
    found["approximation_gap_ais"] = round(float((ais_log_px - gaps["elbo_refined"]).mean()), 4)
    found["approximation_gap_is"] = round(float((gaps["log_px"] - gaps["elbo_refined"]).mean()), 4)
    found["amortization_gap"] = round(
        float((gaps["elbo_refined"] - gaps["elbo_amortized"]).mean()), 4
    )
    found["gap_examples"] = both
    exact = gaps["log_px_quadrature"].to_numpy()
    known = ~np.isnan(exact)
    if known.any():
        found["quadrature_examples"] = int(known.sum())
        found["quadrature_log_px"] = round(float(exact[known].mean()), 4)
        found.update(ais.difference(ais_log_px[known], exact[known], "quadrature"))
        found["mean_abs_is_minus_quadrature"] = round(
            float(np.abs(is_log_px[:both][known] - exact[known]).mean()), 4
        )
    return found


def main() -> None:
    config = params.load("ais")
    networks = model_files.load_networks()
    images, labels = load_split("test").first(config.ais_examples)
    count = len(images)
    gaps = read_gap_estimates(count)
    start = time.perf_counter()
    log(f"AIS on {count} test images, {config.ais_chains} chains, steps {config.ais_steps}")
    estimator = sampler(config, networks)
    values, rows = forward_curve(estimator, config.ais_steps, images)
    is_log_px = ImportanceSampler(networks, config.eval_samples, config.seed)(images)["log_px"]
    metrics = {
        "examples": count,
        "steps": config.ais_steps[-1],
        "chains": config.ais_chains,
        "initial": config.ais_initial,
        "ais_log_px": rows[-1]["ais_log_px"],
        "is_log_px": round(float(is_log_px.mean()), 4),
        "eval_samples": config.eval_samples,
        "acceptance": rows[-1]["acceptance"],
        **comparisons(values, is_log_px, gaps),
    }
    if config.bdmc_examples:
        metrics.update(bdmc_curve(estimator, config.bdmc_examples, config.seed, rows))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["device"] = devices.describe()
    log(
        f"log p(x) of {count} images: AIS {metrics['ais_log_px']:.3f}, "
        f"IS {metrics['is_log_px']:.3f} (AIS - IS {metrics['ais_minus_is']:.3f} "
        f"+- {metrics['ais_minus_is_standard_error']:.3f})"
    )
    curve = pd.DataFrame(rows)
    per_image = pd.DataFrame(
        {
            "test_index": np.arange(count),
            "digit": labels.astype(int),
            "log_px_ais": values["log_px"],
            "log_px_is": is_log_px,
            "acceptance": values["acceptance"],
        }
    )
    # the exact mean to draw beside AIS's, where every image has its exact log p(x)
    exact = metrics["quadrature_log_px"] if metrics.get("quadrature_examples") == count else None
    figure = ais_figures.steps_figure(
        curve, metrics["is_log_px"], config.eval_samples, count, config.bdmc_examples, exact
    )
    with StagedOutputs() as out:
        out.json(METRICS, metrics)
        curve.to_csv(out.file(CURVE), index=False)
        per_image.to_csv(out.file(PER_IMAGE), index=False)
        save_png(figure, out.file(FIGURE))
    log(f"wrote {METRICS}, {CURVE}, {PER_IMAGE}, {FIGURE}")


if __name__ == "__main__":
    run_stage(main)
