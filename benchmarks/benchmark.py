"""Throughput figures of this machine: training examples/s and evaluation seconds, in one run.

    python benchmarks/benchmark.py            # everything (about 25 minutes on 2 CPU cores)
    python benchmarks/benchmark.py --quick    # evaluation on 1,000 test images, extrapolated

Prints (no timing is asserted anywhere; compare ratios measured in one run, not absolute
figures across runs on a noisy host):
1. the machine's float32 matmul peak (a plain large matmul, XLA-compiled), GFLOP/s;
2. training examples/s for the default model and a paper-sized one (latent 50, hidden 500-500)
   at batch 128 and 1024, with one minibatch per compiled call (plain Keras fit + jit_compile)
   and with the stacked minibatches the train stage uses, and the input pipeline's own rate
   (it must be far above the training rate, or it would be the bottleneck);
3. the seed's model shape (latent 128, hidden 256-256, batch 128): this train step against a
   plain PyTorch loop of the same model (if torch is installed: pip install torch==2.13.0);
4. importance-sampled log p(x): seconds for k = 1000 and 5000 on the 10k test set, GFLOP/s, and
   the seed-shaped model at k = 1000 on 1,000 images against the same computation in PyTorch.
5. the paper-sized model trained on the IWAE bound (k = 1, 5, 50) at Burda et al.'s batch of 20:
   examples/s and the hours their 3,280-epoch schedule would take here (`--only iwae`);
6. AIS (the ais stage's sampler, 16 chains, 10 leapfrog steps): HMC gradient evaluations of
   log f_t per second, GFLOP/s and % of the matmul peak, and seconds per image at 1,000 steps,
   for the default and the paper-sized model (`--only ais`);
7. the VampPrior's recipe (paper-sized, flow, IWAE k = 5) with the standard prior, with 500
   pseudo-inputs, and with gated 300-300 units: examples/s, % of the matmul peak and hours for
   600 epochs (`--only prior`).
Uses data/prepared/ when it exists, random binary images of the same size otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

from benchmarks.flops import flops_per_example, vamp_prior_flops  # noqa: E402
from latent.data.datasets import BINARY, Split  # noqa: E402
from latent.estimators import ais  # noqa: E402
from latent.estimators.importance_sampling import (  # noqa: E402
    TILE,
    ImportanceSampler,
    default_tiles_per_call,
)
from latent.model import vae  # noqa: E402
from latent.plumbing import devices, params, pipeline  # noqa: E402
from latent.training import batches  # noqa: E402
from latent.training import fit as train  # noqa: E402

DEFAULT = ("default", 2, [256, 256])
PAPER = ("paper-sized", 50, [500, 500])
IWAE_BATCH, IWAE_EPOCHS = 20, 3_280  # Burda et al.'s minibatch and number of passes
SEED_SHAPE = ("seed-shaped", 128, [256, 256])
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def images(split: str, count: int) -> tuple[np.ndarray, str]:
    path = Path(f"data/prepared/{split}_images.npy")
    if path.exists():
        x = np.load(path)
        if x.max() <= 1:
            return x[:count], f"data/prepared/{split}_images.npy"
    rng = np.random.default_rng(0)
    return (rng.random((count, 784)) < 0.13).astype(np.uint8), "random binary images"


def matmul_peak(n: int = 2048, repeats: int = 20) -> float:
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    product = tf.function(lambda a, b: tf.reduce_sum(a @ b), jit_compile=True)
    product(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        product(a, b).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


TRAIN_DEFAULTS = {
    k: v
    for k, v in yaml.safe_load(PARAMS.read_text()).items()
    if k in pipeline.stage_params("train")
}


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def training_rate(
    latent_dim,
    hidden,
    batch_size,
    x,
    mode="stacked",
    per_call=1,
    epochs=2,
    train_samples=1,
    **changes,
):
    """Examples/s of the last of ``epochs`` epochs (the first one compiles). ``mode``: "stacked"
    (``per_call`` minibatches stacked into one call, the train stage's way) or
    "steps_per_execution" (Keras runs ``per_call`` train steps per call; 1 = plain fit);
    ``changes``: other train params (e.g. posterior, prior)."""
    keras.utils.set_random_seed(0)
    split = Split("train", x, np.zeros(len(x), np.uint8), BINARY)
    steps = len(x) // batch_size
    config = params.stage_config("train")(
        **{
            **TRAIN_DEFAULTS,
            "latent_dim": latent_dim,
            "hidden_units": hidden,
            "batch_size": batch_size,
            "train_samples": train_samples,
            **changes,
        }
    )
    model = train.build_model(config, split, steps)
    stacked = mode == "stacked"
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=True,
        steps_per_execution=1 if stacked else per_call,
    )
    data = batches.training_batches(split, batch_size, per_call if stacked else 1, 0, epochs)
    timer = EpochTimer()
    calls = math.ceil(steps / per_call) if stacked else steps
    model.fit(data, epochs=epochs, steps_per_epoch=calls, callbacks=[timer], verbose=0)
    return steps * batch_size / timer.seconds


def input_rate(x, batch_size, minibatches_per_call, epochs=2) -> float:
    """Examples/s of the training input pipeline alone (shuffle, batch, gather), no model."""
    split = Split("train", x, np.zeros(len(x), np.uint8), BINARY)
    data = batches.training_batches(split, batch_size, minibatches_per_call, 0, epochs)
    start, examples = time.perf_counter(), 0
    for batch in data:
        examples += int(np.prod(batch.shape[:-1]))
    return examples / (time.perf_counter() - start)


def torch_training_rate(latent_dim, hidden, batch_size, x, epochs=2) -> float | None:
    """The same model and ELBO as a plain PyTorch loop (the seed's way of training)."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)

    def mlp(sizes):
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1])

    encoder = mlp([784, *hidden, 2 * latent_dim])
    decoder = mlp([latent_dim, *reversed(hidden), 784])
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    data = torch.from_numpy(x.astype(np.float32))
    steps = len(x) // batch_size
    rates = []
    for _ in range(epochs):
        order = torch.randperm(len(x))
        start = time.perf_counter()
        for step in range(steps):
            batch = data[order[step * batch_size : (step + 1) * batch_size]]
            loc, raw_scale = encoder(batch).chunk(2, dim=-1)
            scale = torch.nn.functional.softplus(raw_scale)
            z = loc + scale * torch.randn_like(loc)
            logits = decoder(z)
            log_likelihood = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, batch, reduction="none"
            ).sum(-1)
            kl = (0.5 * (scale**2 + loc**2 - 1) - torch.log(scale)).sum(-1)
            loss = -(log_likelihood - kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates[-1]


def evaluation_seconds(latent_dim, hidden, k, x) -> float:
    keras.utils.set_random_seed(0)
    networks = vae.make_networks(latent_dim, hidden, "relu", "gaussian", 0)
    sampler = ImportanceSampler(networks, k, seed=0)
    tiles, per_call = math.ceil(len(x) / TILE), default_tiles_per_call()
    for shape in {min(per_call, tiles), tiles % per_call}:  # compile every call shape first
        if shape:
            sampler(x[: shape * TILE])
    start = time.perf_counter()
    values = sampler(x)
    seconds = time.perf_counter() - start
    assert np.all(np.isfinite(values["log_px"]))
    return seconds


def torch_evaluation_seconds(latent_dim, hidden, k, x, batch=8) -> float | None:
    """log p(x) by importance sampling in PyTorch, ``batch`` images x k samples at a time."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(
        torch.nn.Linear(784, hidden[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[0], hidden[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[1], 2 * latent_dim),
    )
    decoder = torch.nn.Sequential(
        torch.nn.Linear(latent_dim, hidden[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[1], hidden[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden[0], 784),
    )
    data = torch.from_numpy(x.astype(np.float32))
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(x), batch):
            xb = data[first : first + batch]
            loc, raw = encoder(xb).unsqueeze(1).chunk(2, dim=-1)
            scale = torch.nn.functional.softplus(raw)
            z = loc + scale * torch.randn(len(xb), k, latent_dim)
            log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
            log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            logits = decoder(z)
            log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, xb.unsqueeze(1).expand_as(logits), reduction="none"
            ).sum(-1)
            torch.logsumexp(log_lik + log_prior - log_q, dim=1) - math.log(k)
    return time.perf_counter() - start


def training_table(train_x, source) -> None:
    print(f"training throughput, examples/s (one timed epoch of {len(train_x)} {source}):")
    print(
        f"{'model':<12} {'batch':>5}  {'fit':>8}  {'fit, steps_per_execution=S':>26}  "
        f"{'stacked S (train stage)':>23}  {'S':>3}  {'GFLOP/s':>7}  {'input alone':>11}"
    )
    for name, latent_dim, hidden in (DEFAULT, PAPER):
        for batch_size in (128, 1024):
            stack = train.stack_size(len(train_x) // batch_size, batch_size)
            plain = training_rate(latent_dim, hidden, batch_size, train_x, "steps_per_execution")
            keras_stack = training_rate(
                latent_dim, hidden, batch_size, train_x, "steps_per_execution", stack
            )
            stacked = training_rate(latent_dim, hidden, batch_size, train_x, "stacked", stack)
            flops = flops_per_example(latent_dim, hidden)["train"] * stacked / 1e9
            feed = input_rate(train_x, batch_size, stack)
            print(
                f"{name:<12} {batch_size:>5}  {plain:>8,.0f}  {keras_stack:>26,.0f}  "
                f"{stacked:>23,.0f}  {stack:>3}  {flops:>7.0f}  {feed:>11,.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="evaluate 1,000 test images and extrapolate to 10,000"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=["train", "seed", "eval", "iwae", "ais", "prior"],
        choices=["train", "seed", "eval", "iwae", "ais", "prior"],
        help="sections to run: training table, the seed's model shape, evaluation, IWAE by k, AIS,"
        " the VampPrior recipe",
    )
    args = parser.parse_args()

    print(f"device: {devices.describe()}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    peak = matmul_peak()
    print(f"matmul peak (2048^3, float32, XLA): {peak:.0f} GFLOP/s\n")

    train_x, source = images("train", 50_000)
    if "train" in args.only:
        training_table(train_x, source)
    if "seed" in args.only:
        seed_shape_training(train_x)
    if "eval" in args.only:
        count = 1_000 if args.quick else 10_000
        evaluation_table(peak, *images("test", count), args.quick)
    if "iwae" in args.only:
        iwae_training(train_x)
    if "ais" in args.only:
        ais_table(peak, images("test", 2 * ais.TILE)[0])
    if "prior" in args.only:
        prior_training(peak, train_x)


def prior_training(peak, train_x) -> None:
    """The VampPrior's training recipe (paper-sized, the flow, IWAE k = 5, batch 128) with the
    standard prior and with 500 pseudo-inputs, and with gated 300-300 units as in Tomczak &
    Welling's code: examples/s, % of the matmul peak (the VampPrior adds, per step, one encoder
    pass over the pseudo-inputs and the mixture's density at every sample:
    ``flops.vamp_prior_flops``), and hours for 600 epochs of the training set (without the
    validation passes)."""
    _, latent_dim, hidden = PAPER
    k, batch, components = 5, 128, 500
    x = train_x[:12_800]
    stack = train.stack_size(len(x) // batch, batch)
    print(f"\nthe VampPrior recipe: latent {latent_dim}, iaf, IWAE k = {k}, batch {batch}:")
    recipes = [
        ("N(0, I)", hidden, "relu", "standard"),
        ("VampPrior", hidden, "relu", "vamp"),
        ("VampPrior", [300, 300], "gated", "vamp"),
    ]
    for name, units, activation, prior in recipes:
        rate = training_rate(
            latent_dim,
            units,
            batch,
            x,
            "stacked",
            stack,
            train_samples=k,
            posterior="iaf",
            prior=prior,
            prior_components=components,
            activation=activation,
        )
        gated = activation == "gated"
        per_example = flops_per_example(latent_dim, units, samples=k, gated=gated)["train"]
        if prior == "vamp":
            per_example += vamp_prior_flops(latent_dim, units, components, batch, k, gated)
        percent = 100 * rate * per_example / 1e9 / peak
        hours = 600 * len(train_x) / rate / 3600
        print(
            f"  {name:<9} {activation} {units}: {rate:>7,.0f} examples/s, {percent:4.1f}% of the "
            f"matmul peak (matmuls only), 600 epochs: {hours:4.2f} h"
        )


def seed_shape_training(train_x) -> None:
    name, latent_dim, hidden = SEED_SHAPE
    print(
        f"\nthe seed's model shape (latent {latent_dim}, hidden {hidden}, batch 128), examples/s:"
    )
    stack = train.stack_size(len(train_x) // 128, 128)
    ours = training_rate(latent_dim, hidden, 128, train_x, "stacked", stack)
    reference = torch_training_rate(latent_dim, hidden, 128, train_x)
    print(f"  this train step (stacked, XLA): {ours:,.0f}")
    if reference is None:
        print("  PyTorch reference loop: skipped (pip install torch==2.13.0 to compare)")
    else:
        print(f"  PyTorch reference loop:         {reference:,.0f}")
        print(f"  ratio: {ours / reference:.2f}x")


def iwae_training(train_x) -> None:
    """The paper-sized model trained on the IWAE bound at Burda et al.'s batch (20), by k, and
    what their schedule (3,280 passes over the training set) would take at that rate."""
    _, latent_dim, hidden = PAPER
    x = train_x[:10_000]
    stack = train.stack_size(len(x) // IWAE_BATCH, IWAE_BATCH)
    print(f"\nIWAE training, paper-sized, batch {IWAE_BATCH} (timed on {len(x)} images):")
    for k in (1, 5, 50):
        rate = training_rate(latent_dim, hidden, IWAE_BATCH, x, "stacked", stack, train_samples=k)
        epoch = len(train_x) / rate
        print(
            f"  k = {k:>2}: {rate:>8,.0f} examples/s, {epoch:6.1f} s per epoch of "
            f"{len(train_x):,}, {IWAE_EPOCHS} epochs: {IWAE_EPOCHS * epoch / 3600:5.1f} h"
        )


def evaluation_table(peak, test_x, source, quick) -> None:
    scale = 10_000 / len(test_x)
    label = " (extrapolated from 1,000)" if quick else ""
    print(f"\nimportance-sampled log p(x) on 10,000 test images{label} ({source}):")
    for name, latent_dim, hidden in (DEFAULT, PAPER):
        for k in (1000, 5000):
            seconds = evaluation_seconds(latent_dim, hidden, k, test_x) * scale
            counts = flops_per_example(latent_dim, hidden, samples=k)["forward"]
            rate = counts * 10_000 / seconds / 1e9
            print(
                f"  {name:<12} k = {k:>4}: {seconds:7.1f} s  {rate:5.0f} GFLOP/s "
                f"({rate / peak:.0%} of the matmul peak)"
            )

    name, latent_dim, hidden = SEED_SHAPE
    seed_x = test_x[:1000].astype(np.float32)
    ours = evaluation_seconds(latent_dim, hidden, 1000, seed_x)
    counts = flops_per_example(latent_dim, hidden, samples=1000)["forward"] * len(seed_x) / 1e9
    print(f"\nthe seed's model shape, k = 1000 on 1,000 test images ({counts:.0f} GFLOP):")
    print(f"  this evaluation: {ours:.1f} s ({counts / ours:.0f} GFLOP/s)")
    reference = torch_evaluation_seconds(latent_dim, hidden, 1000, seed_x)
    if reference is None:
        print("  PyTorch reference: skipped (pip install torch==2.13.0 to compare)")
    else:
        print(
            f"  PyTorch reference: {reference:.1f} s ({counts / reference:.0f} GFLOP/s); "
            f"ratio {reference / ours:.2f}x"
        )


def ais_table(peak, test_x, chains=16, leapfrog_steps=10, steps=100) -> None:
    """AIS throughput. Each step of a chain costs leapfrog_steps + 1 gradients of log f_t (one
    at the start of the step, where beta changes, then one a leapfrog step), for the chains that
    count and for the tuning chains the step sizes are adapted on. A gradient with respect to z
    is a decoder pass forward and one back through its activations (no weight gradients): 2
    decoder passes of matmuls (the encoder's q(z|x) is computed once a call)."""
    x = test_x.astype(np.float32)
    print(
        f"\nAIS, {len(x)} test images, {chains} chains (+{ais.TUNING_CHAINS} tuning), "
        f"{leapfrog_steps} leapfrog steps, timed over {steps} steps:"
    )
    for name, latent_dim, hidden in (DEFAULT, PAPER):
        keras.utils.set_random_seed(0)
        networks = vae.make_networks(latent_dim, hidden, "relu", "gaussian", 0)
        sampler = ais.AnnealedImportanceSampler(networks, chains, leapfrog_steps, "sigmoid", 0)
        sampler(x, steps)  # compiles
        start = time.perf_counter()
        values = sampler(x, steps)
        seconds = time.perf_counter() - start
        assert np.all(np.isfinite(values["log_px"]))
        gradients = len(x) * (chains + ais.TUNING_CHAINS) * steps * (leapfrog_steps + 1)
        rate = gradients / seconds
        gflops = rate * 2 * flops_per_example(latent_dim, hidden)["decoder"] / 1e9
        per_image = seconds / len(x) * 1000 / steps
        print(
            f"  {name:<12} {rate:>10,.0f} gradients/s  {gflops:5.0f} GFLOP/s "
            f"({gflops / peak:.0%} of the matmul peak); 1,000 steps: {per_image:.2f} s per image"
        )


if __name__ == "__main__":
    main()
