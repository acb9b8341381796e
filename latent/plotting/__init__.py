"""Figures: the post's pictures of the posterior and the prior predictive, those of the inference
gap and of annealed importance sampling, drawn from the model's own distributions, and the
explorer page that evaluates the trained networks in a browser."""
