"""The AIS figure: the estimate of log p(x) against the number of annealing steps, beside the
importance-sampled one and the exact one where there is one, and BDMC's sandwich on simulated
images."""

from __future__ import annotations

import pandas as pd

from latent.plotting.canvas import DIGIT_COLOURS, new_figure

SIZE = (10.0, 4.2)  # inches


def steps_figure(
    curve: pd.DataFrame,
    is_log_px: float,
    k: int,
    examples: int,
    simulated: int,
    exact_log_px: float | None = None,
):
    """Mean AIS log p(x) of the test images by steps, beside IS with k samples and, where
    quadrature gave it (latent 2), the exact log p(x); with ``simulated`` images, a second panel
    of BDMC's lower and upper bounds on them by steps."""
    fig = new_figure(SIZE if simulated else (SIZE[0] / 2, SIZE[1]), layout="constrained")
    axes = fig.subplots(1, 2) if simulated else [fig.subplots(1, 1)]
    test_ax = axes[0]
    test_ax.plot(curve["steps"], curve["ais_log_px"], "o-", color=DIGIT_COLOURS(0), label="AIS")
    test_ax.axhline(is_log_px, color=DIGIT_COLOURS(1), linestyle="--", label=f"IS, k = {k}")
    if exact_log_px is not None:
        test_ax.axhline(exact_log_px, color="0.3", linestyle=":", label="exact (quadrature)")
    test_ax.set_title(f"{examples} test images: mean log p(x)", fontsize=10)
    if simulated:
        bdmc_ax = axes[1]
        for column, name, colour in (
            ("bdmc_upper", "reverse AIS (upper bound)", 3),
            ("bdmc_lower", "forward AIS (lower bound)", 0),
        ):
            bdmc_ax.plot(
                curve["steps"], curve[column], "o-", color=DIGIT_COLOURS(colour), label=name
            )
        bdmc_ax.set_title(f"BDMC on {simulated} images simulated from the model", fontsize=10)
    for ax in axes:
        ax.set_xscale("log")
        ax.set(xlabel="annealing steps", ylabel="nats per example")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
