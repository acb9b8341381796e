"""The model and its equations: the seed post's VAE (``vae``) and the flow posterior (``flow``)."""
