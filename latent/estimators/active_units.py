"""How much of the latent space the model uses: active units (Burda et al. 2015) and the KL of
q(z|x) from the prior per latent dimension.

Unit u is active if Cov_x(E_q(z|x)[z_u]) > ACTIVITY_THRESHOLD over the images: the encoder moves
its posterior mean with x, where an inactive unit's q(z_u|x) stays at the prior whatever x is.
The KL per dimension, E_x KL(q(z_u|x) || N(0, 1)) in nats, is analytic for the mean-field
Gaussian and the standard normal prior (it sums to the KL term of the ELBO); a flow's q(z|x)
does not factorize, and the VampPrior's mixture does not, so there is none for either.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from latent.model import vae

ACTIVITY_THRESHOLD = 0.01


def active_units(posterior_means: np.ndarray) -> int:
    """The units u whose posterior mean varies over the images by more than the threshold."""
    return int(np.sum(np.var(posterior_means.astype(np.float64), axis=0) > ACTIVITY_THRESHOLD))


def per_dimension(networks: vae.Networks, images: np.ndarray, seed: int) -> pd.DataFrame:
    """One row a latent dimension, the largest KL first: dimension, the variance of its
    posterior mean over the images, whether it is active, and (Gaussian posterior, standard
    prior only) its mean KL."""
    means = vae.posterior_means(networks, images, seed).astype(np.float64)
    variance = means.var(axis=0)
    table = pd.DataFrame(
        {
            "dimension": np.arange(1, networks.latent_dim + 1),
            "posterior_mean_variance": variance.round(6),
            "active": variance > ACTIVITY_THRESHOLD,
        }
    )
    if not networks.has_flow and networks.has_standard_prior:
        q = vae.approximate_posterior(networks, tf.constant(images, tf.float32))
        kl = vae.kl_per_dimension(q).numpy().astype(np.float64).mean(axis=0)
        table["kl"] = kl.round(6)
        table = table.sort_values("kl", ascending=False, kind="stable")
    return table.reset_index(drop=True)
