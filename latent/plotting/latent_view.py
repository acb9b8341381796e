"""How latent vectors become the two plotted coordinates: z itself (latent_dim 2), z1 against the
digit (latent_dim 1), or the two leading principal directions of the posterior means (PCA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatentView:
    """How latent vectors become the two plotted coordinates."""

    latent_dim: int
    directions: np.ndarray | None  # (L, 2) orthonormal principal directions when L > 2
    explained: tuple[float, float] | None  # their shares of the posterior means' variance

    @classmethod
    def fit(cls, posterior_means: np.ndarray) -> LatentView:
        latent_dim = posterior_means.shape[1]
        if latent_dim <= 2:
            return cls(latent_dim, None, None)
        centred = posterior_means - posterior_means.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        directions = vt[:2].T
        directions *= np.where(directions.sum(axis=0) < 0, -1.0, 1.0)  # a deterministic sign
        shares = singular**2 / np.sum(singular**2)
        return cls(latent_dim, directions, (float(shares[0]), float(shares[1])))

    def coordinates(self, z: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """(N, 2) plot coordinates: z itself, its projection, or (z1, digit + jitter)."""
        if self.latent_dim == 1:
            return np.stack([z[:, 0], labels + rng.uniform(-0.3, 0.3, len(z))], axis=1)
        if self.latent_dim == 2:
            return z
        return z @ self.directions

    def axis_labels(self) -> tuple[str, str]:
        if self.latent_dim == 1:
            return "z1", "digit (jittered)"
        if self.latent_dim == 2:
            return "z1", "z2"
        return (
            f"principal direction 1 ({self.explained[0]:.0%} of variance)",
            f"principal direction 2 ({self.explained[1]:.0%} of variance)",
        )

    def note(self) -> str:
        if self.latent_dim <= 2:
            return ""
        return f"PCA projection of the {self.latent_dim}-D posterior means"
