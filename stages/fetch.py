"""Stage fetch: the 70,000 MNIST images (uint8) and labels, verified, in the standard order.

Writes data/raw/mnist/{train,test}_{images,labels}.npy (60k train then 10k test) from the first
source that serves verified data (``latent.data.sources``). Reads no params.
"""

from __future__ import annotations

from latent.data import sources
from latent.data.datasets import RAW_MNIST, save_arrays
from latent.plumbing.runtime import log, run_stage
from latent.records.atomic import StagedOutputs


def main() -> None:
    arrays = sources.fetch_mnist(sources.load_sources())
    with StagedOutputs() as out:
        save_arrays(out.directory(RAW_MNIST), arrays)
    log(
        f"wrote {RAW_MNIST}/: {len(arrays['train_images'])} train and "
        f"{len(arrays['test_images'])} test images"
    )


if __name__ == "__main__":
    run_stage(main)
