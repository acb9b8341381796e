"""Stage fetch_larochelle: Larochelle & Murray's fixed binarization, only when it is asked for.

With ``binarization: larochelle`` it downloads and verifies the three .amat files
(``latent.data.sources``) and writes data/raw/larochelle/{train,valid,test}_images.npy (uint8
0/1, 784 pixels a row); with any other value it writes only a note saying the files were not
requested, so the default pipeline never needs the network for them.
"""

from __future__ import annotations

from latent.data import sources
from latent.data.datasets import RAW_LAROCHELLE, save_arrays
from latent.plumbing import params
from latent.plumbing.runtime import log, run_stage
from latent.records.atomic import StagedOutputs

NOT_REQUESTED = "NOT_REQUESTED.txt"


def main() -> None:
    config = params.load("fetch_larochelle")
    images = {}
    if config.binarization == "larochelle":
        images = sources.fetch_larochelle(sources.load_sources())
    with StagedOutputs() as out:
        directory = out.directory(RAW_LAROCHELLE)
        save_arrays(directory, {f"{split}_images": array for split, array in images.items()})
        if not images:
            (directory / NOT_REQUESTED).write_text(
                "Larochelle's fixed binarization is fetched only with binarization: larochelle\n",
                encoding="utf-8",
            )
    if images:
        log(f"wrote {RAW_LAROCHELLE}/: " + ", ".join(f"{k} {len(v)}" for k, v in images.items()))
    else:
        log(
            f"binarization is {config.binarization}: Larochelle's files not requested, "
            "nothing fetched"
        )


if __name__ == "__main__":
    run_stage(main)
