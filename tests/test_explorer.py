"""figures/explorer.html is the model: the page's own functions give what the Python model gives.

On tiny fixture models trained by the train stage (latent 2 and 10 with the Gaussian posterior
and the standard prior, latent 2 with the flow, the VampPrior and gated units) the explorer
stage writes the page; headless Chromium opens a probed copy with no network (the flags,
Content-Security-Policy and error capture of the offline plots test), and a probe script calls
the page's functions (``window.explorer``) and its controls (buttons, a select, synthetic
pointer events on the drawing pad and the plane), then writes what it found into the DOM, read
back with --dump-dom. The test proves: decoder means, encoder loc/scale and the flow's samples
and log q(z|x) for fixed eps equal Python's within 1e-5; the ELBO equals ``vae.elbo``'s on the
same eps, and the page's own Monte Carlo ELBO equals it within Monte Carlo error; every
activation params.yaml allows is Keras's; the buttons load the test digits, a drawing moves the
ellipse to the encoder's loc of the drawn pixels, the pointer decodes its z; no error, no
request. The page of a default-sized model is at most 4 MB, and building it twice gives the
same bytes.
"""

import json
import re
import shutil
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from latent.data.datasets import PIXELS, Split, load_split
from latent.model import vae
from latent.plotting import explorer, pictures
from latent.plumbing import params
from latent.records import model_files
from stages import explorer as explorer_stage
from stages import figures as figures_stage
from tests import test_plots_offline as offline
from tests.conftest import REPO, make_workspace
from tests.test_prior import log_normal

pytestmark = pytest.mark.pipeline
chromium = offline.chromium  # the offline plots test's fixture: installed when missing, else skip

MODELS = {
    "gaussian-2": {},
    "gaussian-10": {"latent_dim": 10},
    "iaf-vamp-gated-2": {
        "posterior": "iaf",
        "prior": "vamp",
        "prior_components": 10,
        "activation": "gated",
    },
}
PAGE = Path("figures/explorer.html")
MAX_PAGE_BYTES = 4_000_000
Z_VALUES, IMAGES, EPS_SAMPLES = 5, 3, 8
REFERENCE_SAMPLES = 20_000  # Python's Monte Carlo ELBO, against the page's own
POINTER = (1.25, -1.5)  # where the probe puts the pointer on the plane
WINDOW_SIZE = "1280,1000"
PLANE_PIXEL = 6 / 480  # the plane's [-3, 3] spans 480 CSS pixels: z is known to one of them
CHOSEN_DIMS = (3, 7)  # the probe's choice of plotted dimensions for latent_dim > 2
# strokes on the pad, in pixel coordinates (column, row): a vertical bar, then a bar across it
STROKES = [[(14.5, 5.5 + r) for r in range(0, 17, 2)], [(7.5 + c, 6.5) for c in range(0, 14, 2)]]

# The explorer's probe, after the common start (errors, requests): after the load event it
# calls the page's functions and controls with INPUT and writes what it found (writeProbe)
PROBE = (
    "(function () {"
    + offline.PROBE_START
    + """
  function pointer(type, target, x, y) {
    target.dispatchEvent(new PointerEvent(type, {
      clientX: x, clientY: y, pointerId: 1, pointerType: "mouse", isPrimary: true,
      bubbles: true, buttons: type === "pointerup" ? 0 : 1}));
  }
  function padClient(point) {
    var box = document.getElementById("pad").getBoundingClientRect();
    return [box.left + point[0] / 28 * box.width, box.top + point[1] / 28 * box.height];
  }
  function stroke(points) {
    var pad = document.getElementById("pad");
    points.forEach(function (point, k) {
      var at = padClient(point);
      pointer(k === 0 ? "pointerdown" : "pointermove", pad, at[0], at[1]);
    });
    var last = padClient(points[points.length - 1]);
    pointer("pointerup", pad, last[0], last[1]);
  }
  function choose(selector, value) {
    var element = document.querySelector(selector);
    if (element.type === "radio") element.checked = true; else element.value = value;
    element.dispatchEvent(new Event("change", {bubbles: true}));
  }
  function pointAt(zx, zy) {
    var at = window.explorer.planeToClient(zx, zy);
    pointer("pointermove", document.getElementById("overlay"), at[0], at[1]);
    return window.explorer.state().pointer;
  }
  function checks() {
    var X = window.explorer, found = {model: X.model};
    found.decode = INPUT.z.map(X.decode);
    found.encode = INPUT.images.map(X.encode);
    found.flowSample = INPUT.images.map(function (x, i) { return X.flowSample(x, INPUT.eps[i]); });
    found.elboFixed = INPUT.images.map(function (x, i) { return X.elbo(x, {eps: INPUT.eps[i]}); });
    found.elboPage = X.elbo(INPUT.images[0]);
    found.activations = {};
    INPUT.activations.forEach(function (name) {
      found.activations[name] = INPUT.values.map(X.activations[name]);
    });
    found.controlsShown = !document.getElementById("axes-controls").hidden;
    found.zeroLabel = document.getElementById("zero-label").textContent;
    found.opened = X.state();
    found.buttons = Array.prototype.map.call(
      document.querySelectorAll("#digit-buttons button"), function (button) {
        button.click();
        var state = X.state();
        return {label: button.textContent, pixels: state.pixels.join(""),
                loc: state.posterior.loc, ellipse: state.ellipse};
      });
    document.getElementById("clear").click();
    found.cleared = X.state();
    X.loadDigit(INPUT.digit);
    found.loaded = X.state();
    document.getElementById("clear").click();
    stroke(INPUT.strokes[0]);
    found.firstStroke = X.state();
    stroke(INPUT.strokes[1]);
    found.secondStroke = X.state();
    found.elboText = document.getElementById("elbo-text").textContent;
    found.pointer = pointAt(INPUT.pointer[0], INPUT.pointer[1]);
    found.pointerText = document.getElementById("pointer-text").textContent;
    if (X.model.latentDim > 2) {
      choose("#dim-x", String(INPUT.dims[0]));
      choose("#dim-y", String(INPUT.dims[1]));
      found.chosen = X.state();
      found.chosenPointer = pointAt(INPUT.pointer[0], INPUT.pointer[1]);
      choose("input[name=others][value=drawing]");
      found.heldAtDrawing = pointAt(INPUT.pointer[0], INPUT.pointer[1]);
    }
    return found;
  }
  window.addEventListener("load", function () {
    try { probe.found = checks(); } catch (error) { probe.errors.push("probe: " + text(error)); }
    setTimeout(writeProbe, 0);
  });
})();
"""
)


@dataclass
class Built:
    """A fixture workspace with a trained model and the page the explorer stage wrote."""

    name: str
    workspace: Path
    networks: vae.Networks
    test: Split

    @property
    def page(self) -> Path:
        return self.workspace / PAGE

    @property
    def latent_dim(self) -> int:
        return self.networks.latent_dim


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request, tmp_path_factory) -> Built:
    workspace = make_workspace(tmp_path_factory.mktemp(request.param), **MODELS[request.param])
    with chdir(workspace):
        explorer_stage.main()
    networks = model_files.load_networks(workspace / "models")
    return Built(
        request.param, workspace, networks, load_split("test", workspace / "data/prepared")
    )


def probe_inputs(built: Built) -> dict:
    rng = np.random.default_rng(0)
    latent_dim = built.latent_dim
    return {
        "z": (1.5 * rng.standard_normal((Z_VALUES, latent_dim))).astype(np.float32).tolist(),
        "images": built.test.images[:IMAGES].astype(int).tolist(),
        "eps": rng.standard_normal((IMAGES, EPS_SAMPLES, latent_dim)).astype(np.float32).tolist(),
        "activations": list(explorer.PAGE_ACTIVATIONS),
        "values": np.concatenate([np.linspace(-8, 8, 161), [-40.0, -20.0, 20.0, 40.0]]).tolist(),
        "digit": int(built.test.labels[1]),
        "strokes": STROKES,
        "pointer": POINTER,
        "dims": CHOSEN_DIMS,
    }


@dataclass
class Explored:
    built: Built
    inputs: dict
    probe: dict

    @property
    def found(self) -> dict:
        assert self.probe["errors"] == [], self.probe["errors"]
        return self.probe["found"]


@pytest.fixture(scope="module")
def explored(built, chromium) -> Explored:
    inputs = probe_inputs(built)
    script = f"var INPUT = {json.dumps(inputs)};\n{PROBE}"
    screenshot = built.workspace / f"explorer-{built.name}.png"
    probe = offline.open_offline(chromium, built.page, screenshot, script, WINDOW_SIZE)
    return Explored(built, inputs, probe)


def encoder_outputs(networks: vae.Networks, images) -> list[np.ndarray]:
    return [np.asarray(t) for t in networks.inference_network(tf.constant(images, tf.float32))]


def plane_pixels(value):
    """Where a latent coordinate lies on the plane's canvas (CSS pixels), as the page maps it."""
    return 46 + 480 * (np.asarray(value) + 3) / 6, 14 + 480 - 480 * (np.asarray(value) + 3) / 6


# --- the model's functions ----------------------------------------------------------------------


def test_decoder_means_at_five_z_equal_pythons(explored):
    z = np.array(explored.inputs["z"], np.float32)
    expected = pictures.bernoulli_means(explored.built.networks.generative_network, z)
    np.testing.assert_allclose(explored.found["decode"], expected, atol=1e-5, rtol=0)


def test_encoder_loc_scale_and_context_of_three_test_images_equal_pythons(explored):
    images = np.array(explored.inputs["images"], np.float32)
    expected = encoder_outputs(explored.built.networks, images)
    for name, python in zip(("loc", "scale", "context"), expected):
        page = [encoded[name] for encoded in explored.found["encode"]]
        np.testing.assert_allclose(page, python, atol=1e-5, rtol=0, err_msg=name)
    has_context = len(expected) == 3
    assert all(
        (encoded["context"] is not None) == has_context for encoded in explored.found["encode"]
    )


def test_samples_of_q_and_log_q_for_fixed_eps_equal_pythons(explored):
    """z = loc + scale eps through the flow (if any) and log q(z|x), as vae.sample_and_log_prob."""
    networks = explored.built.networks
    images = tf.constant(explored.inputs["images"], tf.float32)
    eps = np.transpose(np.array(explored.inputs["eps"], np.float32), (1, 0, 2))  # (k, N, L)
    z, log_q = vae.sample_and_log_prob(vae.approximate_posterior(networks, images), eps)
    page = explored.found["flowSample"]  # per image, per eps
    page_z = np.transpose([[draw["z"] for draw in image] for image in page], (1, 0, 2))
    page_log_q = np.transpose([[draw["logQ"] for draw in image] for image in page])
    np.testing.assert_allclose(page_z, np.asarray(z), atol=1e-5, rtol=0)
    np.testing.assert_allclose(page_log_q, np.asarray(log_q), atol=1e-4, rtol=1e-6)


def test_elbo_on_fixed_eps_equals_vae_elbo(explored):
    images = tf.constant(explored.inputs["images"], tf.float32)
    eps = np.transpose(np.array(explored.inputs["eps"], np.float32), (1, 0, 2))
    expected = vae.bounds_per_example(images, explored.built.networks, tf.constant(eps))
    page = explored.found["elboFixed"]
    for name, key in (
        ("elbo", "elbo"),
        ("kl", "kl"),
        ("expectedLogLikelihood", "expected_log_likelihood"),
    ):
        np.testing.assert_allclose(
            [bound[name] for bound in page], np.asarray(expected[key]), rtol=1e-5, atol=1e-3
        )
    assert all(bound["analyticKl"] == (not explored.built.networks.has_flow) for bound in page)


def test_the_pages_own_elbo_equals_vae_elbo_within_monte_carlo_error(explored):
    networks = explored.built.networks
    x = tf.constant(explored.inputs["images"][:1], tf.float32)
    q = vae.approximate_posterior(networks, x)
    eps = vae.standard_normal([REFERENCE_SAMPLES, 1, networks.latent_dim], [1, 2])
    z, log_q = vae.sample_and_log_prob(q, eps)
    log_w, log_px_given_z = vae.log_importance_weights(x, z, log_q, networks)
    reference = float(vae.elbo(log_px_given_z, log_w, q, networks)[0][0])
    monte_carlo_kl = networks.has_flow or not networks.has_standard_prior
    terms = np.asarray(log_w if monte_carlo_kl else log_px_given_z)[:, 0]
    reference_error = terms.std(ddof=1) / np.sqrt(REFERENCE_SAMPLES)
    page = explored.found["elboPage"]
    assert page["samples"] == params.load("explorer", REPO / "params.yaml").explorer_samples
    assert 0 < page["standardError"] < 10
    error = np.hypot(page["standardError"], reference_error)
    assert abs(page["elbo"] - reference) < 4 * error, (page, reference, error)


def test_every_activation_params_allows_is_evaluated_as_keras_does(explored):
    """Gated units are a Dense layer times a sigmoid one: the gated model's encoder, decoder and
    flow checks above test them whole."""
    allowed = set(params.Params.model_fields["activation"].annotation.__args__) - {"gated"}
    assert allowed | {"sigmoid"} <= set(explorer.PAGE_ACTIVATIONS)
    values = np.array(explored.inputs["values"])
    for name, page in explored.found["activations"].items():
        expected = keras.ops.convert_to_numpy(keras.activations.get(name)(tf.constant(values)))
        np.testing.assert_allclose(page, expected, atol=1e-8, rtol=1e-7, err_msg=name)


# --- the controls -------------------------------------------------------------------------------


def test_each_button_loads_the_first_test_digit_of_its_class_and_clear_empties_the_pad(explored):
    test, found = explored.built.test, explored.found
    buttons = found["buttons"]
    assert [b["label"] for b in buttons] == [str(d) for d in sorted(set(test.labels.tolist()))]
    images = []
    for button in buttons:
        index = int(np.flatnonzero(test.labels == int(button["label"]))[0])
        images.append(test.images[index])
        assert button["pixels"] == "".join(str(int(p)) for p in test.images[index])
    loc = encoder_outputs(explored.built.networks, np.array(images, np.float32))[0]
    np.testing.assert_allclose([b["loc"] for b in buttons], loc, atol=1e-5, rtol=0)
    assert found["cleared"]["pixels"] == [0] * PIXELS
    assert found["cleared"]["posterior"] is None and found["cleared"]["ellipse"] is None


def test_a_drawing_made_with_pointer_events_moves_the_ellipse_to_its_encoding(explored):
    found, networks = explored.found, explored.built.networks
    states = [found["loaded"], found["firstStroke"], found["secondStroke"]]
    pixels = np.array([state["pixels"] for state in states], np.float32)
    assert pixels[0].tolist() == explored.built.test.images[1].tolist()
    bar = pixels[1].reshape(28, 28)
    assert bar[6:22, 14].all() and not bar[:, :11].any() and not bar[:, 18:].any()
    assert pixels[2].reshape(28, 28)[6, 8:21].all()  # the second stroke crosses the first
    loc, scale = encoder_outputs(networks, pixels)[:2]
    dims = [0, 1]
    centres = []
    for state, state_loc, state_scale in zip(states, loc, scale):
        posterior, ellipse = state["posterior"], state["ellipse"]
        np.testing.assert_allclose(posterior["loc"], state_loc, atol=1e-5, rtol=0)
        centre = posterior["mean"] if networks.has_flow else state_loc
        np.testing.assert_allclose(
            [ellipse["cx"], ellipse["cy"]],
            [plane_pixels(centre[dims[0]])[0], plane_pixels(centre[dims[1]])[1]],
            atol=1e-3,
        )
        if not networks.has_flow:
            np.testing.assert_allclose(
                [ellipse["rx"], ellipse["ry"]], 80 * state_scale[dims], atol=1e-3
            )
        centres.append((ellipse["cx"], ellipse["cy"]))
        assert posterior["elbo"]["elbo"] < 0
    assert centres[0] != centres[1] != centres[2], centres
    assert found["elboText"].startswith("ELBO = ") and " nats" in found["elboText"]


def log_prior_float64(networks, z: np.ndarray) -> tuple[float, float]:
    """log p(z) of the model's prior by hand in float64 (N(0, I), or the VampPrior's mean of K
    diagonal Gaussians with their float32 loc and scale, as the page has them), and the sum of
    the magnitudes of its terms, what float64 rounding is relative to."""
    if networks.has_standard_prior:
        loc, scale = np.zeros((1, len(z))), np.ones((1, len(z)))
    else:
        gaussians = vae.prior(networks).components_distribution.distribution
        loc, scale = (np.asarray(v, np.float64) for v in (gaussians.loc, gaussians.scale))
    per_component = log_normal(z, loc, scale)  # (K, L)
    log_pz = np.logaddexp.reduce(per_component.sum(axis=1)) - np.log(len(loc))
    return float(log_pz), float(np.abs(per_component).sum() + abs(log_pz))


def test_the_pointer_on_the_plane_decodes_its_z_and_prints_z_and_log_p_z(explored):
    pointer, networks = explored.found["pointer"], explored.built.networks
    z = np.array(pointer["z"])
    np.testing.assert_allclose(z[:2], POINTER, atol=PLANE_PIXEL)
    assert not z[2:].any()  # the other coordinates at 0
    means = pictures.bernoulli_means(networks.generative_network, z[None].astype(np.float32))[0]
    np.testing.assert_allclose(pointer["means"], means, atol=1e-5, rtol=0)
    log_pz, magnitude = log_prior_float64(networks, z)
    # both in float64 from the same float32 parameters: apart by float64 rounding only, a few
    # units of 1e-16 times the sum of the terms' magnitudes
    assert abs(pointer["logPz"] - log_pz) < 1e-14 * magnitude
    printed = ", ".join(f"{v:.2f}".replace("-", "\u2212") for v in z)
    assert f"z = ({printed})" in explored.found["pointerText"]
    assert f"log p(z) = \u2212{abs(log_pz):.3f} nats" in explored.found["pointerText"]


def test_beyond_two_latent_dimensions_two_are_chosen_and_the_others_held(explored):
    found = explored.found
    assert found["controlsShown"] == (explored.built.latent_dim > 2)
    # 0 is the prior's mean only for N(0, I)
    standard = explored.built.networks.has_standard_prior
    assert found["zeroLabel"] == ("0, the prior mean" if standard else "0")
    if explored.built.latent_dim <= 2:
        assert "chosen" not in found
        return
    chosen, dims = found["chosen"], list(CHOSEN_DIMS)
    assert chosen["dims"] == dims
    loc = np.array(chosen["posterior"]["loc"])
    np.testing.assert_allclose(
        [chosen["ellipse"]["cx"], chosen["ellipse"]["cy"]],
        [plane_pixels(loc[dims[0]])[0], plane_pixels(loc[dims[1]])[1]],
        atol=1e-3,
    )
    z = np.array(found["chosenPointer"]["z"])
    np.testing.assert_allclose(z[dims], POINTER, atol=PLANE_PIXEL)
    assert not np.delete(z, dims).any()
    held = np.array(found["heldAtDrawing"]["z"])
    np.testing.assert_allclose(held[dims], POINTER, atol=PLANE_PIXEL)
    np.testing.assert_allclose(np.delete(held, dims), np.delete(loc, dims), atol=1e-12)


def test_the_flow_is_drawn_as_a_cloud_of_its_samples_and_the_gaussian_as_ellipses(explored):
    posterior = explored.found["secondStroke"]["posterior"]
    ellipse = explored.found["secondStroke"]["ellipse"]
    samples = explored.found["model"]["samples"]
    if explored.built.networks.has_flow:
        cloud = np.array(posterior["samples"])
        assert cloud.shape == (samples, explored.built.latent_dim) and np.isfinite(cloud).all()
        np.testing.assert_allclose(posterior["mean"], cloud.mean(axis=0), atol=1e-9)
        assert ellipse["rx"] is None
    else:
        assert len(posterior["samples"]) == samples  # the ELBO's draws
        assert ellipse["rx"] > 0 and ellipse["ry"] > 0


# --- the page itself ----------------------------------------------------------------------------


def test_no_error_and_no_request_leaves_the_page(explored):
    assert explored.probe["errors"] == []
    assert explored.probe["requests"] == []
    html = explored.built.page.read_text(encoding="utf-8")
    assert not re.search(r"https?:|<script[^>]+src=|<link|@import|url\(", html)
    assert "default-src 'none'" in html  # the page's own policy forbids every request


def test_building_the_page_twice_gives_the_same_bytes(built):
    before = built.page.read_bytes()
    with chdir(built.workspace):
        explorer_stage.main()
    assert built.page.read_bytes() == before
    assert b"MODEL = {" in before and explorer.MODEL_SLOT.encode() not in before


def test_the_page_of_a_default_sized_model_is_at_most_4_mb():
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    rng = np.random.default_rng(0)
    test = Split(
        "test",
        (rng.random((10_000, PIXELS)) < 0.2).astype(np.uint8),
        np.arange(10_000, dtype=np.uint8) % 10,
        "binary",
    )
    for posterior in ("gaussian", "iaf"):
        networks = vae.make_networks(
            defaults["latent_dim"],
            defaults["hidden_units"],
            defaults["activation"],
            posterior,
            defaults["flow_steps"],
        )
        page = explorer.page_html(
            networks, test, defaults["explorer_points"], defaults["explorer_samples"], 0
        )
        assert len(page.encode("utf-8")) <= MAX_PAGE_BYTES, posterior


def test_the_figures_stage_leaves_the_explorer_page_in_place(trained_workspace, tmp_path):
    """Both stages write into figures/: each replaces its own files only."""
    workspace = shutil.copytree(trained_workspace, tmp_path / "workspace")
    with chdir(workspace):
        explorer_stage.main()
        before = PAGE.read_bytes()
        figures_stage.main()
        assert PAGE.read_bytes() == before
        assert sorted(p.name for p in Path("figures").iterdir()) == sorted(
            [PAGE.name, *pictures.SIZES]
        )


def test_the_explorer_params_rerun_only_the_explorer():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    own = [key for key in stages["explorer"]["params"] if key.startswith("explorer_")]
    assert own == ["explorer_points", "explorer_samples"]
    for name, stage in stages.items():
        if name != "explorer":
            assert not set(own) & set(stage.get("params", [])), name
            assert str(PAGE) not in stage.get("deps", []), name
    assert stages["explorer"]["outs"] == [str(PAGE)]  # cached by DVC, not git-tracked
