"""Figures: the post's pictures of the posterior and the prior predictive, and those of the
inference gap, drawn from the model's own distributions."""
