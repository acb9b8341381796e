"""Floating-point operations of the model's matmuls per example, for the benchmark's "% of the
matmul peak" figures."""

from __future__ import annotations

from latent.data.datasets import PIXELS


def flops_per_example(latent_dim: int, hidden_units: list[int], samples: int = 1) -> dict:
    """2 x multiply-adds of the matmuls: one encoder pass and ``samples`` decoder passes."""
    widths = [PIXELS, *hidden_units]
    encoder = sum(2 * a * b for a, b in zip(widths, widths[1:])) + 2 * 2 * widths[-1] * latent_dim
    dec_widths = [latent_dim, *reversed(hidden_units), PIXELS]
    decoder = sum(2 * a * b for a, b in zip(dec_widths, dec_widths[1:]))
    forward = encoder + samples * decoder
    return {"forward": forward, "train": 3 * forward, "decoder": decoder, "encoder": encoder}
