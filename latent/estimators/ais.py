"""Annealed importance sampling (AIS) of log p(x), forward (a stochastic lower bound) and reverse
(from an exact posterior sample: a stochastic upper bound, for bidirectional Monte Carlo).

Intermediate distributions f_t = q(z|x)^(1 - beta_t) p(x, z)^beta_t, from beta_0 = 0 (the
encoder's q(z|x), or the prior with ``initial="prior"``) to beta_T = 1 (the posterior times
p(x)), written in q's noise eps (``vae.annealed_log_density``). Each chain starts at eps ~ N(0, I)
and, for t = 1 .. T, adds log f_t(eps) - log f_{t-1}(eps) to its log weight, then moves eps by one
Hamiltonian Monte Carlo transition that leaves f_t invariant; with C chains per image,

    log p(x) ~= logmeanexp_c (log weight of chain c)      (Neal 2001; Wu et al. 2017)

From the VampPrior (``initial="prior"`` with ``prior: vamp``), a mixture with no
reparameterization, the chains start at exact draws z ~ p(z) (``vae.prior_sample``) and move in z
itself, f_t(z) = p(z) p(x|z)^beta_t.

The transitions are TensorFlow Probability's: ``tfp.mcmc.HamiltonianMonteCarlo`` wrapped in
``tfp.mcmc.SimpleStepSizeAdaptation`` (a step size per chain, moved towards an acceptance rate of
TARGET_ACCEPTANCE). ``tfp.mcmc.sample_annealed_importance_chain`` is not used: it anneals on a
fixed linear schedule only (Wu et al.'s sigmoid schedule needs fewer steps), it runs forward only
(BDMC needs the reverse chain), and it hands each step's kernel the previous step's cached
target log density, so its Metropolis correction is for f_{t-1} rather than f_t. Here each step's
kernel is built for its own beta_t and bootstrapped at the current state (one gradient more per
step), and that log density, minus the previous step's at the same state, is the weight's
increment.

Everything is per example in nats. The random draws come from the keyed streams: the initial eps
of tile i from ``ais_initial`` (counter i), the transitions of step t of tile i from ``ais``
(counter i * 2^20 + t; reverse chains as tile i + 2^11), so the numbers depend on the seed and
the params only, not on how many steps one compiled call takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from latent.data.datasets import PIXELS
from latent.model import vae
from latent.plumbing import streams

TILE = 32  # images per compiled call (chains x TILE decoder rows a leapfrog step)
STEPS_PER_CALL = 50  # annealing steps per compiled call
TARGET_ACCEPTANCE = 0.65  # Wu et al.'s choice for HMC in AIS
INITIAL_STEP_SIZE = 0.05
ADAPTATION_RATE = 0.02
SIGMOID_SHARPNESS = 4.0  # Wu et al.'s delta
REVERSE_TILES = 2**11  # the reverse chains' counters start above every forward tile's
TUNING_TILES = 2**12  # and the tuning chains' above those
TUNING = TUNING_TILES * streams.BLOCKS
TUNING_CHAINS = 4  # chains a tile's step sizes are adapted on, before the chains that count


def schedule(steps: int, kind: str) -> np.ndarray:
    """beta_0 = 0, ..., beta_T = 1 (T = steps): "linear", or "sigmoid" (Wu et al. 2017:
    sigma(delta (2t/T - 1)) rescaled to [0, 1], denser at both ends)."""
    t = np.arange(steps + 1) / steps
    if kind == "linear":
        return t
    if kind != "sigmoid":
        raise ValueError(kind)
    sigmoid = 1 / (1 + np.exp(-SIGMOID_SHARPNESS * (2 * t - 1)))
    return (sigmoid - sigmoid[0]) / (sigmoid[-1] - sigmoid[0])


class Chains(NamedTuple):
    """The state of C chains for a tile of images: eps (C, n, L), log weights, each chain's
    step size (C, n, 1), the log density of eps under the last f_t, accepted transitions."""

    eps: tf.Tensor
    log_weights: tf.Tensor
    step_size: tf.Tensor
    log_density: tf.Tensor
    accepted: tf.Tensor


class AnnealedImportanceSampler:
    """AIS estimates of log p(x) of saved networks: C chains per image, each step of
    ``leapfrog_steps`` leapfrog steps, on the ``schedule_kind`` schedule, from q(z|x) or the
    prior; the number of steps is the call's (one compilation serves every number)."""

    def __init__(
        self,
        networks: vae.Networks,
        chains: int,
        leapfrog_steps: int,
        schedule_kind: str,
        seed: int,
        initial: str = "encoder",
    ):
        if chains < 1 or leapfrog_steps < 1:
            raise ValueError("chains and leapfrog_steps must be at least 1")
        if initial not in ("encoder", "prior"):
            raise ValueError(initial)
        self.networks = networks
        self.chains = int(chains)
        self.schedule_kind = schedule_kind
        self.leapfrog_steps = int(leapfrog_steps)
        self.seed = int(seed)
        self.initial = initial
        self._start = tf.function(self._start_chains, jit_compile=True, reduce_retracing=True)
        self._run = tf.function(self._run_steps, jit_compile=True, reduce_retracing=True)

    def betas(self, steps: int) -> tf.Tensor:
        if not 1 <= steps < streams.BLOCKS:
            raise ValueError(f"steps = {steps} must be from 1 to {streams.BLOCKS - 1}")
        return tf.constant(schedule(steps, self.schedule_kind), tf.float32)

    # --- the distributions --------------------------------------------------------------------

    def initial_distribution(self, x):
        """q(z|x) of the tile's images, or the prior: N(0, I) as a (standard normal) posterior,
        or the VampPrior's mixture itself (whose chains move in z, ``vae.annealed_log_density``)."""
        if self.initial == "prior" and not self.networks.has_standard_prior:
            return vae.prior(self.networks)
        if self.initial == "prior":
            zeros = tf.zeros([tf.shape(x)[0], self.networks.latent_dim])
            return vae.posterior_from_parameters(zeros, tf.ones_like(zeros))
        return vae.approximate_posterior(self.networks, x)

    def initial_states(self, eps, counter):
        """The chains' first states from eps ~ N(0, I) drawn at ``counter`` of ais_initial: eps
        itself, or from the VampPrior z ~ p(z) (``vae.prior_sample``)."""
        if self.initial != "prior" or self.networks.has_standard_prior:
            return eps
        key = streams.key("prior_components", self.seed, counter)
        return vae.prior_sample(self.networks, eps, key)

    def _target(self, x, q, beta):
        def log_density(eps):
            return vae.annealed_log_density(x, q, eps, beta, self.networks)[0]

        return log_density

    def _kernel(self, x, q, beta, step_size, tune: bool):
        """HMC for f_beta; when tuning, wrapped in the step-size adaptation."""
        hmc = tfp.mcmc.HamiltonianMonteCarlo(
            self._target(x, q, beta), step_size, self.leapfrog_steps
        )
        if not tune:
            return hmc
        return tfp.mcmc.SimpleStepSizeAdaptation(
            hmc,
            num_adaptation_steps=2**30,  # adapt at every step (each step's kernel is new)
            target_accept_prob=TARGET_ACCEPTANCE,
            adaptation_rate=ADAPTATION_RATE,
        )

    # --- the chains ---------------------------------------------------------------------------

    def _start_chains(self, x, eps, beta):
        """Chains at ``beta`` (the first of the schedule they run) at eps (C, n, L), log
        weights 0."""
        q = self.initial_distribution(x)
        log_density = self._target(x, q, beta)(eps)
        zeros = tf.zeros_like(log_density)
        step_size = tf.fill(tf.concat([tf.shape(log_density), [1]], 0), INITIAL_STEP_SIZE)
        return Chains(eps, zeros, step_size, log_density, zeros)

    def _run_steps(self, x, counter, chains: Chains, first, count, betas, step_sizes, tune):
        """Steps first + 1 .. first + count (count <= STEPS_PER_CALL) along ``betas``, the
        schedule's window beta_first .. (STEPS_PER_CALL + 1,); the transitions of step t draw
        from the "ais" stream at counter + t. Tuning (``tune``, a Python bool), each chain's step
        size adapts and the geometric mean over the chains of the step size used at each step
        is returned, (STEPS_PER_CALL, n, 1), its first ``count`` rows filled; else step t uses
        the window's step_sizes[t - first - 1] (n, 1). Every argument but ``tune`` is a tensor
        of one shape for every number of steps, so that a tile's shape is compiled once."""
        q = self.initial_distribution(x)
        used = tf.TensorArray(tf.float32, size=STEPS_PER_CALL, element_shape=[x.shape[0], 1])

        def step(t, eps, log_weights, step_size, log_density, accepted, used):
            size = step_size if tune else tf.gather(step_sizes, t - first - 1)
            kernel = self._kernel(x, q, tf.gather(betas, t - first), size, tune)
            results = kernel.bootstrap_results(eps)
            mh = results.inner_results if tune else results
            log_weights += mh.accepted_results.target_log_prob - log_density
            seed = streams.tfp_seed("ais", self.seed, counter + tf.cast(t, tf.int64))
            eps, results = kernel.one_step(eps, results, seed=seed)
            mh = results.inner_results if tune else results
            accepted += tf.cast(mh.is_accepted, tf.float32)
            if tune:
                size = tf.exp(tf.reduce_mean(tf.math.log(step_size), axis=0))
                used = used.write(t - first - 1, size)
                step_size = results.new_step_size
            return (
                t + 1,
                eps,
                log_weights,
                step_size,
                mh.accepted_results.target_log_prob,
                (accepted),
                used,
            )

        state = (first + 1, chains.eps, chains.log_weights, chains.step_size)
        state += (chains.log_density, chains.accepted, used)
        state = tf.while_loop(
            lambda t, *_: t <= first + count, step, state, maximum_iterations=STEPS_PER_CALL
        )
        sizes = state[-1].stack() if tune else tf.zeros([0])
        return Chains(*state[1:-1]), sizes

    def _anneal(self, x, counter: int, betas, eps, progress=None, tune=False, step_sizes=None):
        """Chains from eps (C, n, L) along ``betas``, STEPS_PER_CALL steps a compiled call;
        (chains, the step sizes used, (T, n, 1), when tuning)."""
        chains = self._start(x, eps, betas[0])
        steps, sizes = len(betas) - 1, []
        counter = tf.constant(counter, tf.int64)
        for first in range(0, steps, STEPS_PER_CALL):
            count = min(STEPS_PER_CALL, steps - first)
            window = _padded(betas[first : first + count + 1], STEPS_PER_CALL + 1)
            sizes_window = (
                tf.zeros([0, 1, 1])
                if tune
                else _padded(step_sizes[first : first + count], STEPS_PER_CALL)
            )
            chains, used = self._run(
                x,
                counter,
                chains,
                tf.constant(first),
                tf.constant(count),
                window,
                sizes_window,
                tune,
            )
            sizes.append(used[:count])
            if progress and not tune:
                progress(first + count)
        return chains, (tf.concat(sizes, 0) if tune else None)

    def _tuned_anneal(self, x, counter: int, betas, eps, tuning_eps, progress=None) -> Chains:
        """The step sizes adapted on TUNING_CHAINS chains of their own (started at
        ``tuning_eps``), then frozen for the chains whose weights count: those never adapt on
        their own history, so every transition is a fixed kernel that leaves its f_t invariant
        and the weights stay unbiased (adapting them on the fly biased AIS upwards here, by
        0.07 nats on the linear-Gaussian model)."""
        _, step_sizes = self._anneal(x, counter + TUNING, betas, tuning_eps, tune=True)
        return self._anneal(x, counter, betas, eps, progress, step_sizes=step_sizes)[0]

    def _estimate(self, chains: Chains, sign: float, steps: int) -> dict[str, np.ndarray]:
        """log p(x) = sign * logmeanexp over the chains of their log weights."""
        log_weights = chains.log_weights.numpy().astype(np.float64)
        log_mean = vae.iwae_bound(tf.constant(log_weights)).numpy()
        return {
            "log_px": sign * log_mean,
            "acceptance": chains.accepted.numpy().mean(axis=0) / steps,
            "log_weights": log_weights,  # (C, n), each chain's
        }

    def _image_tiles(self, images: np.ndarray):
        """(tile number, rows, images as a tensor) for each TILE images in turn."""
        n = len(images)
        for first in range(0, n, TILE):
            rows = slice(first, min(first + TILE, n))
            yield first // TILE, rows, tf.constant(images[rows], tf.float32)

    def __call__(self, images: np.ndarray, steps: int, progress: Callable | None = None) -> dict:
        """Forward AIS with ``steps`` steps: per image (N,) log p(x) (a stochastic lower bound,
        nats), the HMC acceptance rate, and each chain's log weight (C, N)."""
        betas, parts = self.betas(steps), []
        for tile, rows, x in self._image_tiles(images):
            shape = [len(x), self.networks.latent_dim]
            key = streams.key("ais_initial", self.seed, tile)
            eps = self.initial_states(vae.standard_normal([self.chains, *shape], key), tile)
            key = streams.key("ais_initial", self.seed, TUNING_TILES + tile)
            tuning_eps = self.initial_states(
                vae.standard_normal([TUNING_CHAINS, *shape], key), TUNING_TILES + tile
            )
            report = (lambda done, r=rows: progress(r.stop, done)) if progress else None
            chains = self._tuned_anneal(x, tile * streams.BLOCKS, betas, eps, tuning_eps, report)
            parts.append(self._estimate(chains, 1.0, steps))
        return _joined(parts)

    def reverse(self, images, z, steps: int, progress: Callable | None = None) -> dict:
        """Reverse AIS with ``steps`` steps from exact posterior samples z (N, L) (of images
        simulated from the model: z ~ p(z), x ~ p(x|z)), every chain started there and annealed
        from the posterior back to the initial distribution: E[exp(log weight)] = 1/p(x), so
        -logmeanexp of the log weights is a stochastic upper bound of log p(x) (Grosse et al.
        2015)."""
        betas, parts = self.betas(steps)[::-1], []
        for tile, rows, x in self._image_tiles(images):
            exact = self.noise_of(x, tf.constant(z[rows], tf.float32))[None]
            eps, tuning_eps = (tf.repeat(exact, c, axis=0) for c in (self.chains, TUNING_CHAINS))
            report = (lambda done, r=rows: progress(r.stop, done)) if progress else None
            counter = (REVERSE_TILES + tile) * streams.BLOCKS
            chains = self._tuned_anneal(x, counter, betas, eps, tuning_eps, report)
            parts.append(self._estimate(chains, -1.0, steps))
        return _joined(parts)

    def noise_of(self, x, z):
        """The eps that the initial distribution's reparameterization maps to z (z itself for
        the VampPrior, whose chains move in z)."""
        q = self.initial_distribution(x)
        if isinstance(q, tfp.distributions.MixtureSameFamily):
            return z
        if isinstance(q, tfp.distributions.Independent):
            return (z - q.distribution.loc) / q.distribution.scale
        z0 = q.bijector.inverse(z)  # the flow's base Gaussian
        return (z0 - q.distribution.distribution.loc) / q.distribution.distribution.scale


def _padded(values: tf.Tensor, length: int) -> tf.Tensor:
    """``values`` along its first axis, extended to ``length`` by repeating its last entry (the
    padding is never read: it keeps every compiled call's shapes the same)."""
    missing = length - int(values.shape[0])
    return tf.concat([values, tf.repeat(values[-1:], missing, axis=0)], 0)


def _joined(parts: list[dict]) -> dict[str, np.ndarray]:
    return {
        name: np.concatenate([p[name] for p in parts], axis=-1 if name == "log_weights" else 0)
        for name in parts[0]
    }


def simulate(networks: vae.Networks, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (count, 784) binary, z (count, L)): z ~ p(z), x ~ p(x|z), so that z is an exact sample
    of p(z|x) (keys ``bdmc_simulation``, and ``prior_components`` for the VampPrior's)."""
    eps = vae.standard_normal([count, networks.latent_dim], streams.key("bdmc_simulation", seed))
    z = vae.prior_sample(networks, eps, streams.key("prior_components", seed, 2**40))
    logits = networks.generative_network(z)
    uniform = tf.random.stateless_uniform(
        [count, PIXELS], streams.key("bdmc_simulation", seed, 1), alg=streams.ALGORITHM
    )
    x = tf.cast(uniform < tf.sigmoid(logits), tf.float32)
    return x.numpy(), z.numpy()


def mean_and_standard_error(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def difference(ais_log_px: np.ndarray, other: np.ndarray, name: str) -> dict:
    """AIS minus another estimate on the same images: mean, standard error, mean |difference|
    and the image where |difference| is largest (its position among the images)."""
    delta = np.asarray(ais_log_px, np.float64) - np.asarray(other, np.float64)
    mean, error = mean_and_standard_error(delta) if len(delta) > 1 else (float(delta[0]), 0.0)
    worst = int(np.argmax(np.abs(delta)))
    return {
        f"ais_minus_{name}": round(mean, 4),
        f"ais_minus_{name}_standard_error": round(error, 4),
        f"mean_abs_ais_minus_{name}": round(float(np.abs(delta).mean()), 4),
        f"worst_image_ais_minus_{name}": {
            "image": worst,
            "difference": round(float(delta[worst]), 4),
        },
    }


def sandwich(lower: np.ndarray, upper: np.ndarray) -> dict:
    """BDMC on simulated images: the forward (lower) and reverse (upper) bounds' means and the
    mean gap between them, nats per example."""
    gap = np.asarray(upper, np.float64) - np.asarray(lower, np.float64)
    return {
        "bdmc_lower": round(float(np.mean(lower)), 4),
        "bdmc_upper": round(float(np.mean(upper)), 4),
        "bdmc_gap": round(float(gap.mean()), 4),
        "bdmc_gap_max": round(float(gap.max()), 4),
    }
