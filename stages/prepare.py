"""Stage prepare: binarized MNIST, split 50,000 train / 10,000 valid / 10,000 test.

Reads data/raw/ (and Larochelle's files, with ``binarization: larochelle``); writes
data/prepared/ (``latent.data.datasets``), binarized as ``binarization`` says
(``latent.data.binarization``). Same params give byte-identical outputs.
"""

from __future__ import annotations

from latent.data import binarization, datasets
from latent.plumbing import params
from latent.plumbing.runtime import log, run_stage
from latent.records.atomic import StagedOutputs, write_json


def main() -> None:
    config = params.load("prepare")
    raw = datasets.load_raw_mnist()
    fixed = datasets.load_larochelle() if config.binarization == "larochelle" else None
    log(f"binarization {config.binarization}, seed {config.binarization_seed}")
    splits, encodings = binarization.prepare(
        raw, config.binarization, config.binarization_seed, fixed
    )
    info = {
        "binarization": config.binarization,
        "binarization_seed": config.binarization_seed,
        "encoding": encodings,
        "sizes": {name: int(len(images)) for name, (images, _) in splits.items()},
    }
    with StagedOutputs() as out:
        directory = out.directory(datasets.PREPARED)
        datasets.save_prepared(directory, splits)
        write_json(directory / "info.json", info)
    for name, (images, _) in splits.items():
        log(f"{name}: {len(images)} images, {encodings[name]}, mean pixel {images.mean():.4f}")


if __name__ == "__main__":
    run_stage(main)
