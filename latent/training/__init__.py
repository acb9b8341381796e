"""Training the VAE: input pipelines, callbacks, the optimizer and the fit that joins them."""
