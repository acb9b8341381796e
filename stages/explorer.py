"""Stage explorer: figures/explorer.html, the trained model in one offline page you can touch.

Reads models/ and the prepared test split; writes figures/explorer.html
(``latent.plotting.explorer`` says what it shows and how the page evaluates the networks):
``explorer_points`` test digits as points, ``explorer_samples`` draws of q(z|x) for the ELBO of a
drawing (and the flow's cloud), ``seed`` for the flow's Monte Carlo means and the page's draws.
"""

from __future__ import annotations

from pathlib import Path

from latent.data.datasets import load_split
from latent.plotting import explorer
from latent.plumbing import params
from latent.plumbing.runtime import log, run_stage
from latent.records import model_files
from latent.records.atomic import StagedOutputs

OUTPUT = Path("figures/explorer.html")


def main() -> None:
    config = params.load("explorer")
    networks = model_files.load_networks()
    test = load_split("test")
    page = explorer.page_html(
        networks, test, config.explorer_points, config.explorer_samples, config.seed
    )
    with StagedOutputs() as out:
        out.file(OUTPUT).write_bytes(page.encode("utf-8"))
    log(f"wrote {OUTPUT} ({len(page.encode('utf-8')) / 1e6:.2f} MB)")


if __name__ == "__main__":
    run_stage(main)
