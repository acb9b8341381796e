"""The explorer page: the trained model in one self-contained HTML file that runs it in the browser.

figures/explorer.html shows the latent plane over [-3, 3]^2 with the test digits' posterior means
as coloured points; the pointer decodes z to the Bernoulli means of p(x|z); a 28 x 28 drawing pad
is encoded into q(z|x) (1- and 2-sd ellipses for the Gaussian, a cloud of samples for the flow),
reconstructed from the posterior mean and scored by its ELBO in nats.

The page is the template ``explorer.html`` next to this module with one JSON object (``MODEL``)
in the place of MODEL_SLOT: every layer of the networks as float32 little-endian bytes, base64,
in one blob (``layers``: offsets and shapes); the posterior means (float32, in the blob) and
labels of the first test digits; the first test digit of each class; the page's settings. Its
plain JavaScript evaluates the networks with the formulas of ``latent.model.vae`` and
``latent.model.flow``: Dense layers with their activations (times their gates for gated units),
softplus scales, the flow's MADEs (kernels multiplied by their masks here, as ``MaskedDense``
multiplies them), sigmoid gates, the latent order reversed between steps and log q(z|x) from the
log-determinant, the VampPrior's mixture from the encoder's Gaussians at its pseudo-inputs
(``prior``: their loc and scale, computed here, only for ``prior: vamp``); the ELBO is
``vae.elbo``'s (analytic KL for the Gaussian and N(0, I), Monte Carlo for the flow or the
VampPrior).

The page loads nothing: no network access of any kind (its own Content-Security-Policy forbids
every request). The same networks, test split and settings give the same bytes (no dates).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex

from latent.data.datasets import Split
from latent.model import vae
from latent.plotting.canvas import DIGIT_COLOURS
from latent.plumbing.runtime import StageError

TEMPLATE = Path(__file__).with_name("explorer.html")
MODEL_SLOT = "/*@MODEL@*/null"
GRID_LIMIT = 3.0  # the plane spans [-3, 3] on both axes, as the manifold figure
# the activations the page evaluates: every one params.yaml's ``activation`` allows, linear, and
# sigmoid (the gates of ``activation: gated``, whose units are a Dense layer times its gate)
PAGE_ACTIVATIONS = ("linear", "relu", "tanh", "softplus", "elu", "gelu", "silu", "sigmoid")


@dataclass
class WeightBlob:
    """float32 arrays laid end to end: their bytes (little-endian) and where each one starts."""

    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, array) -> dict:
        """Append ``array`` as float32; its reference {offset (bytes), shape} in the blob."""
        data = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
        reference = {"offset": self.size, "shape": list(data.shape)}
        self.chunks.append(data.tobytes())
        self.size += data.nbytes
        return reference

    def base64(self) -> str:
        return base64.b64encode(b"".join(self.chunks)).decode("ascii")


def activation_name(layer) -> str:
    """The name of a Dense layer's activation, if the page can evaluate it."""
    name = layer.get_config()["activation"]
    if name not in PAGE_ACTIVATIONS:
        raise StageError(
            f"layer {layer.name!r}: activation {name!r} is not one the explorer page evaluates "
            f"({', '.join(PAGE_ACTIVATIONS)})"
        )
    return name


def dense_layer(layer, blob: WeightBlob, kernel=None) -> dict:
    """One Dense layer for the page: activation, kernel (inputs, units) and bias (or None)."""
    kernel = layer.kernel.numpy() if kernel is None else kernel
    return {
        "activation": activation_name(layer),
        "kernel": blob.add(kernel),
        "bias": blob.add(layer.bias.numpy()) if layer.use_bias else None,
    }


def hidden_layers(network, blob: WeightBlob) -> list[dict]:
    """The network's hidden Dense layers (``hidden_0``, ``hidden_1``, ...) in order, each with
    its ``gate`` (``gate_0``, ...: the sigmoid layer it is multiplied by) for gated units."""
    names = {layer.name for layer in network.layers}
    hidden = []
    for layer in network.layers:
        if layer.name.startswith("hidden_"):
            entry = dense_layer(layer, blob)
            gate = layer.name.replace("hidden_", "gate_")
            if gate in names:
                entry["gate"] = dense_layer(network.get_layer(gate), blob)
            hidden.append(entry)
    return hidden


def inference_layers(network, blob: WeightBlob) -> dict:
    """Encoder x -> hidden layers -> loc, scale (softplus) and, for the flow, the context h."""
    heads = [name for name in ("loc", "scale", "context") if name in network.output_names]
    return {
        "hidden": hidden_layers(network, blob),
        **{name: dense_layer(network.get_layer(name), blob) for name in heads},
    }


def generative_layers(network, blob: WeightBlob) -> dict:
    """Decoder z -> hidden layers -> the 784 Bernoulli logits."""
    return {
        "hidden": hidden_layers(network, blob),
        "logits": dense_layer(network.get_layer("logits"), blob),
    }


def flow_layers(flow, blob: WeightBlob) -> dict:
    """Each IAF step's MADE: masked_0..2 with their kernels multiplied by their masks, the
    unmasked context layer (no bias), and the activation between them ("gated": the first half
    of a hidden layer's outputs times the sigmoid of the second, keras' ``glu``)."""
    steps = []
    for made in flow.mades:
        masked = [
            dense_layer(layer, blob, layer.kernel.numpy() * layer.mask) for layer in made.masked
        ]
        steps.append(
            {
                "activation": made.activation,
                "masked": masked,
                "context": dense_layer(made.context, blob),
            }
        )
    return {"steps": steps}


def first_of_each_class(labels: np.ndarray) -> dict[int, int]:
    """digit -> index of its first test image, for every digit the split holds."""
    return {d: int(np.flatnonzero(labels == d)[0]) for d in range(10) if np.any(labels == d)}


def page_model(networks: vae.Networks, test: Split, points: int, samples: int, seed: int) -> dict:
    """The JSON object the page runs on (see the module docstring)."""
    blob = WeightBlob()
    images, _ = test.first(points)
    count = len(images)
    means = vae.posterior_means(networks, images, seed)
    digits = first_of_each_class(test.labels)
    model = {
        "latentDim": networks.latent_dim,
        "posterior": "iaf" if networks.flow is not None else "gaussian",
        "hasFlow": networks.has_flow,
        "samples": samples,
        "seed": seed,
        "gridLimit": GRID_LIMIT,
        "meanSamples": vae.mean_samples(networks),
        "colours": [to_hex(DIGIT_COLOURS(d)) for d in range(10)],
        "inference": inference_layers(networks.inference_network, blob),
        "generative": generative_layers(networks.generative_network, blob),
        "flow": flow_layers(networks.flow, blob) if networks.has_flow else None,
        "points": {
            "means": blob.add(means),
            "labels": "".join(str(int(label)) for label in test.labels[:count]),
        },
        "testDigits": [
            {
                "digit": digit,
                "index": index,
                "pixels": "".join("1" if p else "0" for p in test.images[index] > 0),
            }
            for digit, index in digits.items()
        ],
    }
    if not networks.has_standard_prior:
        gaussians = vae.prior(networks).components_distribution.distribution
        model["prior"] = {"loc": blob.add(gaussians.loc), "scale": blob.add(gaussians.scale)}
    model["blob"] = blob.base64()
    return model


def page_html(networks: vae.Networks, test: Split, points: int, samples: int, seed: int) -> str:
    """The explorer page: the template with the model's JSON in its slot. ``points`` test digits
    are plotted (the first ones of the split), ``samples`` draws of q(z|x) give the ELBO of a
    drawing (and the flow's cloud), ``seed`` keys the flow's Monte Carlo means and the page's own
    draws."""
    model = json.dumps(page_model(networks, test, points, samples, seed), separators=(",", ":"))
    template = TEMPLATE.read_text(encoding="utf-8")
    if template.count(MODEL_SLOT) != 1:
        raise StageError(f"{TEMPLATE}: expected one {MODEL_SLOT} in the template")
    # inside <script>, "</" could end the element: JSON may spell "<" as \u003c instead
    return template.replace(MODEL_SLOT, model.replace("<", "\\u003c"))
