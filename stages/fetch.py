"""Stage fetch: the 70,000 MNIST images (uint8) and labels, verified, in the standard order.

Writes data/raw/mnist/{train,test}_{images,labels}.npy (60k train then 10k test). Reads no params.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import sources
from stages.atomic import StagedOutputs
from stages.runtime import log, run_stage

OUTPUT = Path("data/raw/mnist")


def main() -> None:
    arrays = sources.fetch_mnist(sources.load_sources())
    with StagedOutputs() as out:
        directory = out.directory(OUTPUT)
        for name, array in arrays.items():
            np.save(directory / f"{name}.npy", array)
    log(
        f"wrote {OUTPUT}/: {len(arrays['train_images'])} train and "
        f"{len(arrays['test_images'])} test images"
    )


if __name__ == "__main__":
    run_stage(main)
