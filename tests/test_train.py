"""The train stage: it learns, it is deterministic and byte-stable, it keeps the best (or averaged)
model, its schedules are the documented ones, it resumes after being killed, it fails clearly."""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from latent.data.binarization import prepare
from latent.data.datasets import Split
from latent.plumbing import params, pipeline
from latent.records import backup, model_files
from latent.training import batches, callbacks, optimizer
from latent.training import fit as train
from stages import train as train_stage
from tests import fixtures
from tests.conftest import REPO, TINY_PARAMS, chdir, make_workspace, write_params

TRAIN_PARAMS = params.stage_config("train")(
    **{
        key: value
        for key, value in {
            **yaml.safe_load((REPO / "params.yaml").read_text()),
            **TINY_PARAMS,
        }.items()
        if key in pipeline.stage_params("train")
    }
)


def changed(config: params.StageConfig, **changes) -> params.StageConfig:
    """A copy of ``config`` with ``changes``, validated (a misspelt key is an error)."""
    return type(config)(**{**config.model_dump(), **changes})


def make_splits(binarization="static"):
    prepared, encodings = prepare(fixtures.mnist_arrays(), binarization, 0)
    return {n: Split(n, x, y, encodings[n]) for n, (x, y) in prepared.items()}


@pytest.fixture(scope="module")
def splits():
    return make_splits()


def fit(splits, report=lambda message: None, backup=None, minibatches_per_call=None, **overrides):
    config = changed(TRAIN_PARAMS, **overrides)
    snapshot_images = splits["test"].images[:20].astype(np.float32)
    return train.fit(
        config,
        splits["train"],
        splits["valid"],
        snapshot_images,
        report=report,
        backup=backup,
        minibatches_per_call=minibatches_per_call,
    )


def test_training_raises_the_elbo(splits):
    run = fit(splits, epochs=4)
    valid = [r.logs["val_elbo"] for r in run.records]
    assert valid[-1] > valid[0] + 5
    assert valid[0] > -784 * math.log(2) - 50  # one epoch already beats a coin per pixel


def test_two_seeded_runs_give_identical_weights_and_metrics(splits):
    first, second = fit(splits, epochs=2), fit(splits, epochs=2)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        assert np.array_equal(a, b)
    assert [r.logs for r in first.records] == [r.logs for r in second.records]
    third = fit(splits, epochs=2, seed=1)
    assert not np.array_equal(first.model.get_weights()[0], third.model.get_weights()[0])


def test_stacking_minibatches_into_one_call_changes_nothing(splits):
    runs = [fit(splits, epochs=2, minibatches_per_call=s) for s in (1, 4)]  # 4: a short last call
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # same steps, same draws


def test_saved_model_is_the_best_epoch_also_with_ema(splits):
    # a tiny training set and a large step: the valid ELBO peaks early, training runs on
    small = Split("train", splits["train"].images[:100], splits["train"].labels[:100], "binary")
    for ema in (False, True):
        config = changed(TRAIN_PARAMS, epochs=40, patience=4, learning_rate=0.01, ema=ema)
        config = changed(config, latent_dim=8, hidden_units=[256], batch_size=20)
        run = train.fit(config, small, splits["valid"], splits["test"].images[:20], report=len)
        valid = [r.logs["val_elbo"] for r in run.records]
        assert run.best_epoch == int(np.argmax(valid)) + 1
        if not ema:  # (the average lags: with ema the fixture is still improving at epoch 40)
            assert run.best_epoch < len(run.records), "the fixture should over-fit and stop early"
        restored = run.model.evaluate(
            batches.validation_batches(splits["valid"].images), verbose=0, return_dict=True
        )
        # validation ran on the averaged weights, and those are the ones kept
        assert restored["elbo"] == pytest.approx(valid[run.best_epoch - 1], abs=1e-3)


def test_dynamic_binarization_draws_fresh_bits_every_epoch_keyed_by_the_epoch():
    dynamic = make_splits("dynamic")["train"]
    assert dynamic.encoding == "intensity" and dynamic.images.max() > 1
    epochs = list(batches.training_batches(dynamic, 50, 1, seed=0, epochs=2))
    first, second = np.stack(epochs[:10]), np.stack(epochs[10:])
    assert set(np.unique(first)) == {0.0, 1.0}
    assert not np.array_equal(first, second)
    # the second epoch alone (a resumed run) is the same stream
    resumed = np.stack(
        list(batches.training_batches(dynamic, 50, 1, seed=0, epochs=2, initial_epoch=1))
    )
    assert np.array_equal(resumed, second)
    # a pixel of intensity v is on with probability v / 255
    assert abs(first.mean() - dynamic.images.mean() / 255) < 0.01


def test_iwae_objective_and_dreg_train(splits):
    for estimator, prior in [
        ("reparameterized", "standard"),
        ("dreg", "standard"),
        ("dreg", "vamp"),
    ]:
        run = fit(splits, epochs=2, train_samples=5, gradient_estimator=estimator, prior=prior)
        logs = run.records[-1].logs
        assert run.model.objective_name == "iwae"
        assert logs["val_iwae"] >= logs["val_elbo"]
        assert run.records[-1].logs["val_iwae"] > run.records[0].logs["val_iwae"]


def test_iwae_schedule_is_burda_et_als_scaled_to_the_epochs():
    config = changed(TRAIN_PARAMS, epochs=3280, learning_rate=1e-3, lr_schedule="iwae")
    schedule = optimizer.learning_rate(config, steps_per_epoch=1)
    starts = np.cumsum([0] + [3**i for i in range(7)])  # first epoch of each stage
    for i, start in enumerate(starts):
        assert float(schedule(start)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-6)
        if start:
            assert float(schedule(start - 1)) == pytest.approx(1e-3 * 10 ** (-(i - 1) / 7))
    half = optimizer.learning_rate(changed(config, epochs=1640), steps_per_epoch=2)  # same steps
    assert [float(half(s)) for s in starts] == [float(schedule(s)) for s in starts]
    cosine = optimizer.learning_rate(changed(config, lr_schedule="cosine", epochs=10), 100)
    assert float(cosine(0)) == pytest.approx(1e-3) and float(cosine(1000)) == pytest.approx(0)
    assert optimizer.learning_rate(changed(config, lr_schedule="constant"), 100) == 1e-3


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_every_kernel_by_lr_times_decay_not_biases(splits, weight_decay):
    config = changed(TRAIN_PARAMS, learning_rate=0.01, weight_decay=weight_decay)
    model = train.build_model(config, splits["train"], steps_per_epoch=1)
    adam = optimizer.make_optimizer(config, steps_per_epoch=1)
    variables = model.trainable_variables
    before = [v.numpy() for v in variables]
    adam.apply([np.zeros(v.shape, np.float32) for v in variables], variables)  # Adam moves 0
    kernels = [v for v in variables if "kernel" in v.path]
    assert kernels and len(kernels) == len([v for v in variables if "bias" in v.path])
    for variable, value in zip(variables, before):
        factor = 1 - 0.01 * weight_decay if "kernel" in variable.path else 1
        np.testing.assert_allclose(variable.numpy(), value * factor, rtol=1e-6)


def test_batch_larger_than_the_training_set_is_rejected(splits):
    message = r"batch_size = 100000 is not allowed; expected at most the 500 training images"
    with pytest.raises(params.ParamError, match=message):
        fit(splits, batch_size=100_000)


def test_nan_guard_stops_training_and_nothing_is_saved(tmp_path):
    workspace = make_workspace(tmp_path / "w", train=False, learning_rate=1e30)
    message = r"training diverged in epoch 1 .* nothing was saved"
    with chdir(workspace), pytest.raises(callbacks.TrainingDiverged, match=message):
        train_stage.main()
    assert not (workspace / "models").exists() and not (workspace / "metrics").exists()
    staging = [p.name for p in workspace.iterdir() if p.name.endswith((".staging", ".old"))]
    assert staging == []


def outputs(workspace: Path) -> dict[str, bytes]:
    """Every file the train stage writes but metrics/train.json (timings, device)."""
    files = {}
    for top in ("models", "dvclive"):
        for path in sorted((workspace / top).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(workspace))] = path.read_bytes()
    return files


def test_stage_writes_loadable_networks_and_byte_stable_outputs(trained_workspace, tmp_path):
    metrics = json.loads((trained_workspace / "metrics/train.json").read_text())
    assert metrics["device"].startswith(("CPU: ", "GPU: ")) and metrics["epochs_run"] == 3
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    # the .keras files load with plain Keras, without this repository's code
    encoder = keras.saving.load_model(
        trained_workspace / "models" / model_files.INFERENCE_NETWORK_FILE
    )
    decoder = keras.saving.load_model(
        trained_workspace / "models" / model_files.GENERATIVE_NETWORK_FILE
    )
    loc, scale = encoder(np.zeros((1, 784), np.float32))
    assert loc.shape == (1, 2) and decoder(loc).shape == (1, 784)
    snapshots = np.load(trained_workspace / "models" / "posterior_snapshots.npz")
    assert snapshots["posterior_means"].shape == (metrics["epochs_run"] + 1, 100, 2)
    # a second run with the same params, code and data writes the same bytes
    again = make_workspace(tmp_path / "again")
    assert outputs(again) == outputs(trained_workspace)
    assert not (again / backup.BACKUPS).exists() or not any((again / backup.BACKUPS).iterdir())


def test_bad_param_leaves_the_previous_model(tmp_path):
    workspace = make_workspace(tmp_path / "w", epochs=1)
    before = {p: p.read_bytes() for p in (workspace / "models").iterdir()}
    write_params(workspace, epochs=1, latent_dim=0)
    with chdir(workspace), pytest.raises(params.ParamError, match="latent_dim = 0 is not allowed"):
        train_stage.main()
    assert {p: p.read_bytes() for p in (workspace / "models").iterdir()} == before


# --- interrupted training --------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_a_run_interrupted_in_epoch_3_resumes_from_its_last_save_to_the_same_bits(splits, tmp_path):
    """Saving after every epoch resumes from epoch 2; the train stage's cadence, which saves after
    the first epoch and then at most every SAVE_EVERY_SECONDS, here from epoch 1. Both end with
    the uninterrupted run's bits."""
    overrides = dict(epochs=5, ema=True, kl_warmup_epochs=2, lr_schedule="iwae")
    uninterrupted = fit(splits, **overrides)

    def interrupt_in_epoch_3(line):
        if line.startswith("epoch 3/"):  # epoch 3's end, before its state is saved
            raise Interrupted

    for every_seconds, saved_epoch in ((0.0, 2), (backup.SAVE_EVERY_SECONDS, 1)):
        store = backup.TrainingBackup(tmp_path / f"backup-{every_seconds}", every_seconds)
        with pytest.raises(Interrupted):
            fit(splits, report=interrupt_in_epoch_3, backup=store, **overrides)
        lines = []
        resumed = fit(splits, report=lines.append, backup=store, **overrides)
        assert lines[0] == f"resuming from epoch {saved_epoch} (backup {store.directory})"
        weights = zip(uninterrupted.model.get_weights(), resumed.model.get_weights(), strict=True)
        assert all(np.array_equal(a, b) for a, b in weights)
        assert [r.logs for r in resumed.records] == [r.logs for r in uninterrupted.records]
        assert resumed.best_epoch == uninterrupted.best_epoch
        assert resumed.snapshots.epochs == uninterrupted.snapshots.epochs
        assert np.array_equal(
            np.stack(resumed.snapshots.means), np.stack(uninterrupted.snapshots.means)
        )


def test_other_params_code_or_data_never_resume_from_a_backup(splits):
    key = backup.TrainingBackup.for_run(TRAIN_PARAMS, splits["train"]).directory
    assert backup.TrainingBackup.for_run(TRAIN_PARAMS, splits["train"]).directory == key
    other_params = changed(TRAIN_PARAMS, learning_rate=0.002)
    assert backup.TrainingBackup.for_run(other_params, splits["train"]).directory != key
    assert backup.TrainingBackup.for_run(TRAIN_PARAMS, splits["valid"]).directory != key


def test_the_backup_key_covers_the_training_code_that_dvc_yaml_lists_and_only_it(tmp_path):
    code = backup.training_code()
    names = {path.relative_to(REPO).as_posix() for path in code}
    assert {"stages/train.py", "latent/model/vae.py", "latent/training/fit.py"} <= names
    assert not any(name.startswith(("latent/estimators/", "latent/plotting/")) for name in names)
    assert all(path.exists() for path in code)
    copies = [Path(shutil.copy(path, tmp_path / path.name)) for path in code[:2]]
    arrays = [np.arange(3)]
    key = backup.run_key(TRAIN_PARAMS, arrays, copies)
    copies[1].write_text(copies[1].read_text() + "# edited\n")
    assert backup.run_key(TRAIN_PARAMS, arrays, copies) != key


def test_kill_9_then_rerun_gives_the_uninterrupted_run_byte_for_byte(tmp_path):
    """The stage saves after its first epoch (and then every SAVE_EVERY_SECONDS, longer than this
    run): a kill after that save resumes from it."""
    overrides = dict(epochs=40, patience=40, hidden_units=[256, 256])
    reference = make_workspace(tmp_path / "reference", **overrides)
    workspace = make_workspace(tmp_path / "killed", train=False, **overrides)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "stages.train"]
    process = subprocess.Popen(command, cwd=workspace, env=env, stderr=subprocess.PIPE)
    saved_epoch = 0
    deadline = time.monotonic() + 120
    while saved_epoch < 1 and time.monotonic() < deadline and process.poll() is None:
        states = list((workspace / backup.BACKUPS).glob("*/state.json"))
        if states:
            with contextlib.suppress(ValueError, OSError):  # being replaced at this moment
                saved_epoch = json.loads(states[0].read_text())["epoch"]
        time.sleep(0.005)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workspace / "models").exists()

    rerun = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from epoch" in rerun.stderr
    assert outputs(workspace) == outputs(reference)
    assert not any((workspace / backup.BACKUPS).iterdir())  # removed once training completed
    metrics = json.loads((workspace / "metrics/train.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs_run"] == 40


def test_training_state_rename_window_is_recoverable(splits, tmp_path):
    """A kill between the two renames of a save leaves only <key>.old: it is resumed from."""
    store = backup.TrainingBackup(tmp_path / "backup")
    fit(splits, epochs=2, backup=store, report=lambda m: None)  # completes: state left behind
    assert (store.directory / backup.STATE).exists()
    store.directory.rename(store.directory.with_name(store.directory.name + ".old"))
    lines = []
    fit(splits, epochs=3, backup=store, report=lines.append)
    assert lines[0].startswith("resuming from epoch 2")


def test_a_run_killed_after_it_stopped_early_trains_no_more_epochs(splits, tmp_path):
    """Killed between the early stop and the saving of the networks: the rerun resumes with no
    epoch left to train, and ends where the first run ended."""
    small = Split("train", splits["train"].images[:100], splits["train"].labels[:100], "binary")
    config = changed(TRAIN_PARAMS, epochs=40, patience=2, learning_rate=0.01)
    config = changed(config, latent_dim=8, hidden_units=[256], batch_size=20)
    store = backup.TrainingBackup(tmp_path / "backup")
    first = train.fit(
        config, small, splits["valid"], splits["test"].images[:20], report=len, backup=store
    )
    assert len(first.records) < 40, "the fixture should stop early"
    lines = []
    again = train.fit(
        config,
        small,
        splits["valid"],
        splits["test"].images[:20],
        report=lines.append,
        backup=store,
    )
    assert lines[0].startswith(f"resuming from epoch {len(first.records)}")
    assert [r.logs for r in again.records] == [r.logs for r in first.records]
    assert again.best_epoch == first.best_epoch
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        assert np.array_equal(a, b)
