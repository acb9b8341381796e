"""The trained networks on disk: models/, written by the train stage, read by every later stage.

  models/inference_network.keras    encoder: x -> [loc, scale] (and the flow's context h) of q(z|x)
  models/generative_network.keras   decoder: z -> Bernoulli logits of p(x|z)
  models/posterior_flow.keras       the flow's networks (posterior: iaf only)
  models/pseudo_inputs.keras        the VampPrior's pseudo-inputs (prior: vamp only)
  models/posterior_snapshots.npz    training's posterior snapshots (``history``)

The inference and generative networks are plain Keras 3 models that load with
``keras.saving.load_model`` alone; the flow's need ``import latent.model.flow`` first, the
pseudo-inputs ``import latent.model.prior``. Saved
byte-stable (same weights, same bytes); a file that is missing or damaged is the one-line error
naming it and how to restore it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from latent.model import flow as _flow  # noqa: F401  registers the flow's layers for loading
from latent.model import prior as _prior  # noqa: F401  and the pseudo-inputs'
from latent.model.vae import Networks
from latent.plumbing.pipeline import bad_file, reading
from latent.records import atomic

MODELS = Path("models")
INFERENCE_NETWORK_FILE = "inference_network.keras"
GENERATIVE_NETWORK_FILE = "generative_network.keras"
POSTERIOR_FLOW_FILE = "posterior_flow.keras"
PSEUDO_INPUTS_FILE = "pseudo_inputs.keras"


def save_networks(networks: Networks, directory: Path) -> None:
    """The .keras files of the networks, byte-stable (same weights, same bytes)."""
    files = {
        INFERENCE_NETWORK_FILE: networks.inference_network,
        GENERATIVE_NETWORK_FILE: networks.generative_network,
    }
    if networks.flow is not None:
        files[POSTERIOR_FLOW_FILE] = networks.flow
    if networks.pseudo_inputs is not None:
        files[PSEUDO_INPUTS_FILE] = networks.pseudo_inputs
    for name, network in files.items():
        path = Path(directory) / name
        network.save(path)
        atomic.make_zip_reproducible(path)


def load_network(path: Path) -> keras.Model:
    """One saved network, or the one-line error (Keras itself says "File not found" for a
    file that is there but is no zip archive)."""
    if not path.exists():
        raise bad_file(path, "not found")
    if not zipfile.is_zipfile(path):
        raise bad_file(path, "not a .keras (zip) archive: truncated or corrupt")
    with reading(path, "a loadable .keras model"):
        return keras.saving.load_model(path, compile=False)


def load_networks(directory: Path = MODELS) -> Networks:
    """The networks the train stage saved in ``directory`` (with the flow's and the
    pseudo-inputs, if it saved them)."""
    directory = Path(directory)
    inference = load_network(directory / INFERENCE_NETWORK_FILE)
    generative = load_network(directory / GENERATIVE_NETWORK_FILE)
    optional = [directory / name for name in (POSTERIOR_FLOW_FILE, PSEUDO_INPUTS_FILE)]
    flow, pseudo_inputs = (load_network(path) if path.exists() else None for path in optional)
    networks = Networks(inference, generative, flow, pseudo_inputs)
    if int(inference.outputs[0].shape[-1]) != networks.latent_dim:
        raise bad_file(directory, "the inference and generative networks' latent sizes differ")
    return networks
