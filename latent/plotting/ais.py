"""The AIS figure: the estimate of log p(x) against the number of annealing steps, beside the
importance-sampled one, and BDMC's sandwich on simulated images."""

from __future__ import annotations

import pandas as pd

from latent.plotting.canvas import DIGIT_COLOURS, new_figure

SIZE = (10.0, 4.2)  # inches


def steps_figure(curve: pd.DataFrame, is_log_px: float, k: int, examples: int, simulated: int):
    """Left: mean AIS log p(x) of the test images by steps, and IS with k samples; right: BDMC's
    lower and upper bounds on simulated images by steps (when there are any)."""
    fig = new_figure(SIZE, layout="constrained")
    test_ax, bdmc_ax = fig.subplots(1, 2)
    test_ax.plot(curve["steps"], curve["ais_log_px"], "o-", color=DIGIT_COLOURS(0), label="AIS")
    test_ax.axhline(is_log_px, color=DIGIT_COLOURS(1), linestyle="--", label=f"IS, k = {k}")
    test_ax.set_title(f"{examples} test images: mean log p(x)", fontsize=10)
    if simulated:
        for column, name, colour in (
            ("bdmc_upper", "reverse AIS (upper bound)", 3),
            ("bdmc_lower", "forward AIS (lower bound)", 0),
        ):
            bdmc_ax.plot(
                curve["steps"], curve[column], "o-", color=DIGIT_COLOURS(colour), label=name
            )
        bdmc_ax.set_title(f"BDMC on {simulated} images simulated from the model", fontsize=10)
    else:
        bdmc_ax.text(0.5, 0.5, "no BDMC (bdmc_examples: 0)", ha="center", va="center")
    for ax in (test_ax, bdmc_ax):
        ax.set_xscale("log")
        ax.set(xlabel="annealing steps", ylabel="nats per example")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig
