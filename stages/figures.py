"""Stage figures: the posterior and prior-predictive pictures of the seed post, for any latent size.

Reads models/ (networks and posterior snapshots), the prepared test split and the dvclive curves;
writes its figures into figures/ (``latent.plotting.pictures`` says what each figure shows), each
file replaced on its own: the other stages' files there (inference_gap's, ais's, explorer's) stay.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from latent.data.datasets import load_split
from latent.plotting import pictures
from latent.plumbing import params
from latent.plumbing.runtime import log, run_stage
from latent.records import history, model_files
from latent.records.atomic import StagedOutputs

OUTPUT = Path("figures")


def main() -> None:
    config = params.load("figures")
    networks = model_files.load_networks()
    snapshots = history.load_snapshots(model_files.MODELS)
    test = load_split("test")
    with StagedOutputs() as out, tempfile.TemporaryDirectory() as drawn:
        pictures.draw_all(networks, test, snapshots, Path(drawn), config.seed, config.manifold_grid)
        for name in sorted(pictures.SIZES):
            shutil.move(Path(drawn) / name, out.file(OUTPUT / name))
    log(f"wrote {OUTPUT}/: " + ", ".join(sorted(pictures.SIZES)))


if __name__ == "__main__":
    run_stage(main)
