"""Floating-point operations of the model's matmuls per example, for the benchmark's "% of the
matmul peak" figures."""

from __future__ import annotations

from latent.data.datasets import PIXELS


def flops_per_example(
    latent_dim: int, hidden_units: list[int], samples: int = 1, gated: bool = False
) -> dict:
    """2 x multiply-adds of the matmuls: one encoder pass and ``samples`` decoder passes.
    ``gated`` units (``activation: gated``) take two matmuls into each hidden layer, the value
    and its gate."""
    into_hidden = 2 if gated else 1
    widths = [PIXELS, *hidden_units]
    encoder = sum(2 * a * b * into_hidden for a, b in zip(widths, widths[1:]))
    encoder += 2 * 2 * widths[-1] * latent_dim
    dec_widths = [latent_dim, *reversed(hidden_units)]
    decoder = sum(2 * a * b * into_hidden for a, b in zip(dec_widths, dec_widths[1:]))
    decoder += 2 * dec_widths[-1] * PIXELS
    forward = encoder + samples * decoder
    return {"forward": forward, "train": 3 * forward, "decoder": decoder, "encoder": encoder}


def vamp_prior_flops(
    latent_dim: int,
    hidden_units: list[int],
    components: int,
    batch: int,
    samples: int,
    gated: bool = False,
) -> float:
    """What the VampPrior adds to one example's training step: its share of the encoder pass
    over the pseudo-inputs (components / batch of an encoder pass) and the mixture's log density
    at each of its samples (about 4 operations per component and latent dimension), both x 3
    for the backward pass."""
    encoder = flops_per_example(latent_dim, hidden_units, gated=gated)["encoder"]
    return 3 * (components / batch * encoder + samples * 4 * components * latent_dim)
