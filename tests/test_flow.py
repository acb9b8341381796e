"""The flow posterior (IAF): its log q(z|x) is the change of variables computed by brute force,
each step is autoregressive, zero steps is the Gaussian, it loads in a fresh process with one
import, and it fits a banana-shaped posterior better than the Gaussian does."""

import gc
import subprocess
import sys
import textwrap
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from latent.model import vae
from latent.model.flow import AutoregressiveStep, Made, PosteriorFlow
from tests.conftest import REPO


def random_flow(latent_dim=3, steps=2, context_units=2, seed=0, activation="relu"):
    """A flow whose networks are far from identity (random kernels of scale 0.5 where training
    starts near 0), so that a wrong mask or determinant would show; the gate biases stay at their
    start, so that sigma stays away from 0 and the dense determinant is well conditioned."""
    keras.utils.set_random_seed(seed)
    flow = PosteriorFlow(latent_dim, steps, context_units, hidden_units=12, activation=activation)
    rng = np.random.default_rng(seed)
    for weight in flow.weights:
        if len(weight.shape) == 2:
            weight.assign(rng.normal(0, 0.5, weight.shape).astype(np.float32))
    return flow


def test_log_q_is_the_change_of_variables_with_a_dense_jacobian():
    latent_dim, n = 3, 4
    flow = random_flow(latent_dim)
    loc = tf.constant(np.random.default_rng(1).normal(size=(n, latent_dim)), tf.float32)
    scale = tf.fill([n, latent_dim], 0.7)
    context = tf.constant(np.random.default_rng(2).normal(size=(n, 2)), tf.float32)
    q = vae.posterior_from_parameters(loc, scale, context, flow)
    eps = tf.constant(np.random.default_rng(3).normal(size=(1, n, latent_dim)), tf.float32)
    z, log_q = vae.sample_and_log_prob(q, eps)

    z0 = loc + scale * eps[0]
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z_again = flow.bijector(context).forward(z0)
    jacobian = tape.batch_jacobian(z_again, z0).numpy()  # (n, L, L), dz_T/dz_0 per example
    log_det = np.log(np.abs(np.linalg.det(jacobian.astype(np.float64))))
    base = vae.posterior_from_parameters(loc, scale).log_prob(z0).numpy()
    np.testing.assert_allclose(z[0], z_again, rtol=1e-5)
    np.testing.assert_allclose(log_q[0], base - log_det, rtol=1e-4, atol=1e-4)
    # log_prob of a given z (through the inverse, L passes per step) agrees too
    np.testing.assert_allclose(q.log_prob(z[0]), log_q[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("activation", ["relu", "gated"])
def test_each_step_is_autoregressive_in_the_right_order(activation):
    latent_dim = 4
    flow = random_flow(latent_dim, steps=1, activation=activation)
    made = flow.mades[0]
    context = tf.constant(np.random.default_rng(4).normal(size=(1, 2)), tf.float32)
    step = AutoregressiveStep(made, context)
    z = tf.constant(np.random.default_rng(5).normal(size=(1, latent_dim)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        m, s = made(z, context)
        y = step.forward(z)
    for output in (m, s):  # m_i, s_i depend on z_1 .. z_{i-1} only: strictly lower triangular
        jacobian = tape.batch_jacobian(output, z)[0].numpy()
        assert np.all(np.triu(jacobian) == 0)
        assert np.any(np.tril(jacobian, -1) != 0)
    jacobian = tape.batch_jacobian(y, z)[0].numpy()  # z'_i depends on z_1 .. z_i: lower
    assert np.all(np.triu(jacobian, 1) == 0)
    np.testing.assert_allclose(np.diag(jacobian), tf.sigmoid(s)[0], rtol=1e-5)


def test_a_fresh_step_is_close_to_the_identity():
    made = Made(latent_dim=3, context_units=2, hidden_units=8)
    m, s = made(tf.ones([1, 3]), tf.ones([1, 2]))
    np.testing.assert_allclose(tf.sigmoid(s), tf.sigmoid(2.0) * np.ones((1, 3)), atol=0.05)


def test_zero_flow_steps_is_exactly_the_gaussian():
    loc = tf.constant([[0.5, -1.0]])
    scale = tf.constant([[0.3, 2.0]])
    context = tf.constant([[1.0, 1.0]])
    eps = tf.random.stateless_normal([6, 1, 2], seed=[0, 1])
    gaussian = vae.posterior_from_parameters(loc, scale)
    no_steps = vae.posterior_from_parameters(loc, scale, context, PosteriorFlow(2, 0, 2))
    for a, b in zip(vae.sample_and_log_prob(gaussian, eps), vae.sample_and_log_prob(no_steps, eps)):
        np.testing.assert_array_equal(a, b)
    networks = vae.make_networks(2, [4], "relu", "gaussian", 0)  # N(0, I), the standard prior
    np.testing.assert_array_equal(
        vae.analytic_kl(gaussian, networks), vae.analytic_kl(no_steps, networks)
    )


def test_saved_flow_loads_in_a_fresh_process_with_one_import(tmp_path):
    flow = random_flow(latent_dim=3, steps=2)
    path = tmp_path / "posterior_flow.keras"
    flow.save(path)
    z = np.random.default_rng(6).normal(size=(5, 3)).astype(np.float32)
    context = np.random.default_rng(7).normal(size=(5, 2)).astype(np.float32)
    bijector = flow.bijector(context)
    expected = [
        np.asarray(bijector.forward(z)),
        np.asarray(bijector.forward_log_det_jacobian(z, 1)),
    ]
    np.save(tmp_path / "inputs.npy", np.concatenate([z, context], axis=1))
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        import keras, numpy as np
        import latent.model.flow  # registers the flow's layers
        flow = keras.saving.load_model({str(path)!r})
        inputs = np.load({str(tmp_path / "inputs.npy")!r})
        bijector, z0 = flow.bijector(inputs[:, 3:]), inputs[:, :3]
        z, log_det = bijector.forward(z0), bijector.forward_log_det_jacobian(z0, 1)
        np.save({str(tmp_path / "outputs.npy")!r}, np.concatenate([z, log_det[:, None]], 1))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = np.load(tmp_path / "outputs.npy")
    np.testing.assert_allclose(outputs[:, :3], expected[0], rtol=1e-6)
    np.testing.assert_allclose(outputs[:, 3], expected[1], rtol=1e-6)


def banana_decoder():
    """p(x|z) whose 40 informative pixels see z only through u = z2 - z1^2: the posterior of an
    image lies along a parabola in the (z1, z2) plane, a shape no Gaussian fits."""
    z = keras.Input((2,))
    u = keras.layers.Lambda(lambda z: z[:, 1:2] - z[:, 0:1] ** 2)(z)
    slopes = np.zeros((1, 784), np.float32)
    slopes[0, :40] = np.where(np.arange(40) % 2 == 0, 3.0, -3.0)
    logits = keras.layers.Lambda(lambda u: u * slopes - 3.0 * (slopes == 0))(u)
    return keras.Model(z, logits)


def test_iaf_fits_a_banana_posterior_better_than_the_gaussian():
    decoder = banana_decoder()
    rng = np.random.default_rng(8)
    z = rng.normal(size=(64, 2)).astype(np.float32)
    x = (rng.random((64, 784)) < tf.sigmoid(decoder(z)).numpy()).astype(np.float32)
    elbos = {}
    for posterior in ("gaussian", "iaf"):
        keras.utils.set_random_seed(0)
        nets = vae.make_networks(2, [64], "tanh", posterior, flow_steps=4)
        nets = vae.Networks(nets.inference_network, decoder, nets.flow)
        model = vae.VariationalAutoencoder(nets, train_samples=1, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
        data = tf.data.Dataset.from_tensor_slices(x).batch(64).repeat(400)
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        eps = tf.random.stateless_normal([2000, 64, 2], seed=[9, 9])
        elbos[posterior] = float(tf.reduce_mean(vae.bounds_per_example(x, nets, eps)["elbo"]))
    print(f"ELBO on the banana: {elbos}")
    assert elbos["iaf"] > elbos["gaussian"] + 0.3


def test_sampling_the_flow_keeps_nothing_alive_and_runs_each_made_once():
    """TFP's bijector cache is one dictionary for all bijectors; a step that kept its input
    alive kept its cache entry, its context and every tensor of the pass for the whole process
    (the 600-epoch flow run grew until the kernel killed it at epoch 124 with 24 GB resident)."""
    flow = random_flow(latent_dim=3, steps=2)
    calls = []
    for made in flow.mades:
        made_call = made.call
        made.call = lambda z, context, made_call=made_call: calls.append(1) or made_call(z, context)
    context = tf.constant(np.random.default_rng(6).normal(size=(4, 2)), tf.float32)
    context_alive = weakref.ref(context)
    q = vae.posterior_from_parameters(tf.zeros([4, 3]), tf.ones([4, 3]), context, flow)
    z, log_q = vae.sample_and_log_prob(q, tf.random.stateless_normal([5, 4, 3], seed=[0, 2]))
    assert len(calls) == 2  # one MADE evaluation a step: the log-determinant reuses the forward's
    del q, z, log_q, context
    gc.collect()
    assert context_alive() is None
