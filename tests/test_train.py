"""The train stage: it learns, it is deterministic, it keeps the best model, it fails clearly."""

import json
import math

import keras
import numpy as np
import pytest

from stages import params, train, vae
from stages.datasets import Split
from stages.prepare import prepare
from tests import fixtures
from tests.conftest import TINY_PARAMS, chdir, make_workspace, write_params

TRAIN_PARAMS = {
    "activation": "relu",
    "train_samples": 1,
    "seed": 0,
    **{k: v for k, v in TINY_PARAMS.items() if k in train.PARAMS},
}


@pytest.fixture(scope="module")
def splits():
    prepared, pixels = prepare(fixtures.mnist_arrays(), "static", 0)
    return {
        name: Split(name, images, labels, pixels[name])
        for name, (images, labels) in prepared.items()
    }


def fit(splits, quiet=True, **overrides):
    p = dict(TRAIN_PARAMS, **overrides)
    report = (lambda message: None) if quiet else print
    return train.fit(
        p,
        splits["train"],
        splits["valid"],
        splits["test"].images[:20].astype(np.float32),
        report=report,
    )


def test_training_raises_the_elbo(splits):
    run = fit(splits, epochs=4)
    valid = [r.logs["val_elbo"] for r in run.records]
    assert valid[-1] > valid[0] + 20
    assert valid[0] > -784 * math.log(2) - 50  # one epoch already beats a coin per pixel


def test_two_seeded_runs_give_identical_weights_and_metrics(splits):
    first, second = fit(splits, epochs=2), fit(splits, epochs=2)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        assert np.array_equal(a, b)
    assert [r.logs for r in first.records] == [r.logs for r in second.records]
    third = fit(splits, epochs=2, seed=1)
    assert not np.array_equal(first.model.get_weights()[0], third.model.get_weights()[0])


def test_stacking_minibatches_into_one_call_changes_nothing(splits):
    p = dict(TRAIN_PARAMS, epochs=2)
    runs = [
        train.fit(
            p,
            splits["train"],
            splits["valid"],
            splits["test"].images[:20].astype(np.float32),
            report=lambda m: None,
            minibatches_per_call=s,
        )
        for s in (1, 5)
    ]
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # same steps, same draws


def test_saved_model_is_the_best_epoch(splits):
    # a tiny training set and a large step: the valid ELBO peaks early, training runs on
    small = Split("train", splits["train"].images[:100], splits["train"].labels[:100], "binary")
    run = train.fit(
        dict(
            TRAIN_PARAMS,
            epochs=25,
            patience=4,
            learning_rate=0.02,
            hidden_units=[128],
            batch_size=20,
        ),
        small,
        splits["valid"],
        splits["test"].images[:20].astype(np.float32),
        report=lambda m: None,
    )
    valid = [r.logs["val_elbo"] for r in run.records]
    assert run.best_epoch == int(np.argmax(valid)) + 1
    assert run.best_epoch < len(run.records), "the fixture should over-fit and stop early"
    restored = run.model.evaluate(
        train.validation_batches(splits["valid"].images), verbose=0, return_dict=True
    )
    assert restored["elbo"] == pytest.approx(valid[run.best_epoch - 1], abs=1e-4)


def test_dynamic_binarization_trains_on_fresh_draws(splits):
    prepared, pixels = prepare(fixtures.mnist_arrays(), "dynamic", 0)
    train_split = Split("train", prepared["train"][0], prepared["train"][1], pixels["train"])
    assert train_split.pixels == "intensity" and train_split.images.max() > 1
    run = train.fit(
        dict(TRAIN_PARAMS, epochs=3),
        train_split,
        splits["valid"],
        splits["test"].images[:20].astype(np.float32),
        report=lambda m: None,
    )
    assert run.model.dynamic_binarization
    valid = [r.logs["val_elbo"] for r in run.records]
    assert valid[-1] > valid[0]


def test_iwae_objective(splits):
    run = fit(splits, epochs=2, train_samples=5)
    logs = run.records[-1].logs
    assert run.model.objective_name == "iwae"
    assert logs["val_iwae"] >= logs["val_elbo"]


def test_batch_larger_than_the_training_set_is_rejected(splits):
    with pytest.raises(
        params.ParamError,
        match=r"batch_size = 100000 is not allowed; expected at most the 500 training images",
    ):
        fit(splits, batch_size=100_000)


def test_nan_guard_stops_training_and_nothing_is_saved(tmp_path):
    workspace = make_workspace(tmp_path / "w", train=False, learning_rate=1e30)
    with (
        chdir(workspace),
        pytest.raises(
            train.TrainingDiverged, match=r"training diverged in epoch 1 .* nothing was saved"
        ),
    ):
        train.main()
    assert not (workspace / "models").exists() and not (workspace / "metrics").exists()
    assert [p.name for p in workspace.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_stage_writes_loadable_networks_and_metrics(trained_workspace):
    metrics = json.loads((trained_workspace / "metrics/train.json").read_text())
    assert set(metrics) >= {
        "best_valid_elbo",
        "epochs_run",
        "seconds_per_epoch",
        "train_examples_per_second",
        "device",
    }
    assert metrics["device"].startswith(("CPU: ", "GPU: "))
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    # the .keras files load with plain Keras, without this repository's code
    encoder = keras.saving.load_model(trained_workspace / "models" / vae.INFERENCE_NETWORK_FILE)
    decoder = keras.saving.load_model(trained_workspace / "models" / vae.GENERATIVE_NETWORK_FILE)
    loc, scale = encoder(np.zeros((1, 784), np.float32))
    assert loc.shape == (1, 2) and decoder(loc).shape == (1, 784)
    snapshots = np.load(trained_workspace / "models" / train.SNAPSHOTS)
    assert snapshots["posterior_means"].shape == (metrics["epochs_run"] + 1, 100, 2)
    assert (trained_workspace / "dvclive/plots/metrics/valid/elbo.tsv").exists()


def test_bad_param_leaves_the_previous_model(tmp_path):
    workspace = make_workspace(tmp_path / "w", epochs=1)
    before = {p: p.read_bytes() for p in (workspace / "models").iterdir()}
    write_params(workspace, epochs=1, latent_dim=0)
    with chdir(workspace), pytest.raises(params.ParamError, match="latent_dim = 0 is not allowed"):
        train.main()
    assert {p: p.read_bytes() for p in (workspace / "models").iterdir()} == before
