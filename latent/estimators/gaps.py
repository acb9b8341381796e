"""The inference gaps of Cremer, Li & Duvenaud ("Inference Suboptimality in Variational
Autoencoders", 2018), per image, in nats:

  approximation gap = log p(x) - ELBO[q*]   how far even the best q in the family is from p(z|x)
  amortization gap  = ELBO[q*] - ELBO[q]    what sharing the encoder's parameters costs
  total gap         = log p(x) - ELBO[q]

with q the amortized q(z|x), q* the refined one (``refinement``) and log p(x) importance-sampled
under whichever of q, q* has the higher ELBO for that image; for a 2-D latent also against the
exact log p(x) by quadrature (``quadrature``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from latent.data.datasets import per_digit_means
from latent.estimators.importance_sampling import ImportanceSampler
from latent.estimators.refinement import RefinedPosterior


@dataclass
class Gaps:
    """Per-image values, nats."""

    labels: np.ndarray
    log_px: np.ndarray
    elbo_amortized: np.ndarray
    elbo_refined: np.ndarray
    expected_log_likelihood: np.ndarray  # under the amortized q (how well x is reconstructed)
    mc_error: np.ndarray  # standard error of elbo_refined - elbo_amortized

    @property
    def approximation_gap(self):
        return self.log_px - self.elbo_refined

    @property
    def amortization_gap(self):
        return self.elbo_refined - self.elbo_amortized

    def per_image(self, exact_log_px: np.ndarray | None = None) -> pd.DataFrame:
        """One row per image (its index into the test split, in order): the estimates, and the
        exact log p(x) by quadrature for the first len(exact_log_px) images (else empty)."""
        exact = np.full(len(self.labels), np.nan)
        if exact_log_px is not None:
            exact[: len(exact_log_px)] = exact_log_px
        return pd.DataFrame(
            {
                "test_index": np.arange(len(self.labels)),
                "digit": self.labels.astype(int),
                "log_px": self.log_px,
                "log_px_quadrature": exact,
                "elbo_amortized": self.elbo_amortized,
                "elbo_refined": self.elbo_refined,
            }
        )

    def per_digit(self) -> pd.DataFrame:
        return per_digit_means(
            self.labels,
            {
                "log_px": self.log_px,
                "elbo_amortized": self.elbo_amortized,
                "elbo_refined": self.elbo_refined,
                "approximation_gap": self.approximation_gap,
                "amortization_gap": self.amortization_gap,
            },
        )


def measure(networks, refined: RefinedPosterior, images, labels, k: int, seed: int) -> Gaps:
    """ELBO[q], ELBO[q*] and log p(x) of each image with k importance samples each."""
    amortized = ImportanceSampler(networks, k, seed, purpose="gap_amortized")(images)
    n = len(images)
    refined_values = ImportanceSampler(
        networks,
        k,
        seed,
        posterior=lambda x, rows: refined.q(tf.minimum(rows, n - 1)),  # padding rows: any image
        purpose="gap_refined",
    )(images)
    better = refined_values["elbo"] >= amortized["elbo"]
    return Gaps(
        labels=labels,
        log_px=np.where(better, refined_values["log_px"], amortized["log_px"]),
        elbo_amortized=amortized["elbo"],
        elbo_refined=refined_values["elbo"],
        expected_log_likelihood=amortized["expected_log_likelihood"],
        mc_error=np.hypot(amortized["elbo_standard_error"], refined_values["elbo_standard_error"]),
    )


def mean(values) -> float:
    return round(float(np.mean(values)), 4)


def gap_metrics(gaps: Gaps, curve: pd.DataFrame, family: str) -> dict:
    """The means over the images (nats per example), the images whose refined ELBO is below the
    amortized one beyond 3 standard errors (0 if refinement never loses), and what the last
    tenth of the refinement steps still gained."""
    below = int(np.sum(gaps.elbo_refined < gaps.elbo_amortized - 3 * gaps.mc_error))
    elbo_curve = curve["mean_refined_elbo"]
    return {
        "examples": len(gaps.labels),
        "posterior": family.lower(),
        "log_px": mean(gaps.log_px),
        "elbo_amortized": mean(gaps.elbo_amortized),
        "elbo_refined": mean(gaps.elbo_refined),
        "approximation_gap": mean(gaps.approximation_gap),
        "amortization_gap": mean(gaps.amortization_gap),
        "total_gap": mean(gaps.log_px - gaps.elbo_amortized),
        "refined_below_amortized_beyond_3_standard_errors": below,
        "mean_standard_error_of_the_difference": mean(gaps.mc_error),
        "refinement_gain_last_10_percent_of_steps": round(
            float(elbo_curve.iloc[-1] - elbo_curve.iloc[int(len(curve) * 0.9) - 1]), 4
        ),
    }


def quadrature_metrics(gaps: Gaps, exact: np.ndarray) -> dict:
    """Importance sampling against quadrature on the first len(exact) images, and the gaps with
    the exact log p(x) there: where p(z|x) has its mass away from q and from what local
    refinement reaches, importance sampling from them cannot see it, and both are too low."""
    count = len(exact)
    difference = np.abs(gaps.log_px[:count] - exact)
    refined, amortized = gaps.elbo_refined[:count], gaps.elbo_amortized[:count]
    return {
        "quadrature_examples": count,
        "log_px_quadrature": mean(exact),
        "log_px_importance_sampled_same_images": mean(gaps.log_px[:count]),
        "mean_abs_difference_importance_sampling_vs_quadrature": mean(difference),
        "median_abs_difference_importance_sampling_vs_quadrature": round(
            float(np.median(difference)), 4
        ),
        "share_within_0.05_nats_of_quadrature": mean(difference <= 0.05),
        "approximation_gap_exact_log_px": mean(exact - refined),
        "amortization_gap_same_images": mean(refined - amortized),
    }


def chosen_examples(gaps: Gaps, exact_log_px: np.ndarray) -> dict[str, list[int]]:
    """Among the images with an exact log p(x) (the first len(exact_log_px)): two easy (highest
    log p(x)), two ambiguous (the largest exact approximation gap, log p(x) - ELBO[q*]: p(z|x)
    least like what local refinement reaches) and the two reconstructed worst (lowest
    E_q[log p(x|z)])."""
    count = len(exact_log_px)
    chosen: dict[str, list[int]] = {}
    taken: set[int] = set()
    orders = {
        "easy": np.argsort(-exact_log_px),
        "ambiguous": np.argsort(-(exact_log_px - gaps.elbo_refined[:count])),
        "reconstructed worst": np.argsort(gaps.expected_log_likelihood[:count]),
    }
    for kind, order in orders.items():
        chosen[kind] = [int(i) for i in order if int(i) not in taken][:2]
        taken.update(chosen[kind])
    return chosen
