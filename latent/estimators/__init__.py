"""Estimators of log p(x) and of the inference gaps: importance sampling, quadrature on a grid
(latent 2), and the refined per-datapoint q*(z|x)."""
