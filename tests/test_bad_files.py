"""A damaged file in the workspace (a full disk, an interrupted copy) ends a stage with one line:
the file, what is wrong, and the command that restores it; exit status 1, no traceback, nothing
half-written. A damaged resume backup is discarded with a warning and training starts over, and
Ctrl-C ends a stage within seconds with the one line "interrupted"."""

import json
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

from latent.plumbing import runtime
from latent.records import atomic, backup
from stages import evaluate, figures, inference_gap, prepare, train
from tests.conftest import REPO, chdir, make_workspace
from tests.test_train import fit, make_splits

MODELS = "restore it with `dvc checkout models` (or `dvc repro train`)"
PREPARED = "restore it with `dvc checkout data/prepared` (or `dvc repro prepare`)"
CURVES = "restore it with `git checkout -- dvclive/plots` (or `dvc repro train`)"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot what was written\n")


@pytest.fixture
def workspace(trained_workspace, tmp_path):
    """A copy of the trained fixture workspace, free to damage."""
    return Path(shutil.copytree(trained_workspace, tmp_path / "workspace", symlinks=True))


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.name.endswith((".staging", ".old"))]


RAW = "restore it with `dvc checkout data/raw/mnist` (or `dvc repro fetch`)"
LIVE_PARAMS = "restore it with `git checkout -- dvclive/params.yaml` (or `dvc repro train`)"
CASES = [
    # (stage, file, damage, what the line says after the file name, how it says to restore it)
    (evaluate, "models/generative_network.keras", truncate, "not a .keras (zip) archive", MODELS),
    (evaluate, "models/inference_network.keras", garble, "not a .keras (zip) archive", MODELS),
    (evaluate, "data/prepared/info.json", garble, "not JSON", PREPARED),
    (evaluate, "data/prepared/test_images.npy", truncate, "not a NumPy .npy array", PREPARED),
    (inference_gap, "data/prepared/test_labels.npy", garble, "not a NumPy .npy array", PREPARED),
    (train, "data/prepared/train_images.npy", truncate, "not a NumPy .npy array", PREPARED),
    (figures, "models/posterior_snapshots.npz", truncate, "not a NumPy .npz archive", MODELS),
    (figures, "dvclive/plots/metrics/valid/elbo.tsv", garble, "not a dvclive curve", CURVES),
    (figures, "dvclive/params.yaml", garble, "not YAML", LIVE_PARAMS),
    (prepare, "data/raw/mnist/test_labels.npy", truncate, "not a NumPy .npy array", RAW),
]


@pytest.mark.parametrize(
    "stage, name, damage, problem, restore", CASES, ids=[f"{c[0].__name__}:{c[1]}" for c in CASES]
)
def test_a_damaged_input_is_one_line_naming_it_and_its_restore_command(
    workspace, capsys, stage, name, damage, problem, restore
):
    damage(workspace / name)
    outputs = [workspace / d for d in ("metrics", "figures", "models", "data/prepared")]
    before = {p: p.read_bytes() for d in outputs if d.exists() for p in d.rglob("*") if p.is_file()}
    with chdir(workspace), pytest.raises(SystemExit) as exit_status:
        runtime.run_stage(stage.main)
    assert exit_status.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"error: {name}: {problem}"), lines[-1]
    assert lines[-1].endswith(f"; {restore}"), lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert leftovers(workspace) == []
    after = {p: p.read_bytes() for d in outputs if d.exists() for p in d.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing removed


def test_missing_networks_name_the_file_and_the_stage_that_makes_them(workspace, capsys):
    shutil.rmtree(workspace / "models")
    with chdir(workspace), pytest.raises(SystemExit):
        runtime.run_stage(evaluate.main)
    line = capsys.readouterr().err.splitlines()[-1]
    assert line == f"error: models/inference_network.keras: not found; {MODELS}"


def test_a_truncated_model_is_one_line_from_the_command_line_too(workspace):
    truncate(workspace / "models" / "generative_network.keras")
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate"],
        cwd=workspace,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: models/generative_network.keras: not a .keras (zip) archive: truncated or "
        f"corrupt; {MODELS}"
    )
    assert "Traceback" not in result.stderr


class Interrupted(Exception):
    pass


DAMAGE_RUN = dict(epochs=4, ema=True)


@pytest.fixture(scope="module")
def uninterrupted():
    """The 4-epoch run that no backup interrupted, the reference for each kind of damage."""
    return fit(make_splits(), **DAMAGE_RUN)


@pytest.mark.parametrize("damaged", [backup.STATE, backup.WEIGHTS, backup.ARRAYS])
def test_a_damaged_backup_is_discarded_with_a_warning_and_training_starts_over(
    tmp_path, capsys, uninterrupted, damaged
):
    splits = make_splits()
    overrides = DAMAGE_RUN

    def interrupt_in_epoch_3(line):
        if line.startswith("epoch 3/"):
            raise Interrupted

    store = backup.TrainingBackup(tmp_path / "backup")
    with pytest.raises(Interrupted):
        fit(splits, report=interrupt_in_epoch_3, backup=store, **overrides)
    truncate(store.directory / damaged)
    capsys.readouterr()
    lines = []
    again = fit(splits, report=lines.append, backup=store, **overrides)
    warning = capsys.readouterr().err
    assert f"warning: {store.directory / damaged}: not " in warning
    assert "discarding the training backup, training from the first epoch" in warning
    assert not any(line.startswith("resuming") for line in lines)
    for a, b in zip(uninterrupted.model.get_weights(), again.model.get_weights(), strict=True):
        assert np.array_equal(a, b)  # the same run as if there had been no backup
    assert [r.logs for r in again.records] == [r.logs for r in uninterrupted.records]


def test_ctrl_c_ends_training_within_seconds_with_one_line_and_keeps_the_backup(tmp_path):
    workspace = make_workspace(
        tmp_path / "w", train=False, epochs=500, patience=500, hidden_units=[256, 256]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=workspace,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a suite started in the background (`cmd &` in a script) has
        # SIGINT ignored, and an ignored signal stays ignored in every process it starts
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list((workspace / backup.BACKUPS).glob("*/state.json")):
        assert process.poll() is None and time.monotonic() < deadline, "no epoch was saved"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == runtime.INTERRUPTED_STATUS
    assert stderr.splitlines()[-1] == "interrupted"
    assert "Traceback" not in stderr
    assert leftovers(workspace) == [] and not (workspace / "models").exists()
    saved = list((workspace / backup.BACKUPS).glob("*/state.json"))  # run again to resume
    assert saved
    # the curves are written in place: the completed epochs' rows are in dvclive/ (the saved
    # state's, or one more where the interrupt fell between the curves and the backup)
    epochs = json.loads(saved[0].read_text())["epoch"]
    curves = sorted((workspace / "dvclive" / "plots" / "metrics").rglob("*.tsv"))
    rows = {len(path.read_text().splitlines()) - 1 for path in curves}  # less the header
    assert {"elbo.tsv", "kl.tsv"} <= {path.name for path in curves}
    assert len(rows) == 1 and rows.pop() in (epochs, epochs + 1), rows


def test_ctrl_c_while_the_backup_is_written_waits_for_the_whole_state(tmp_path, monkeypatch):
    """The window the test above hits only by chance: SIGINT arrives half-way through writing
    the state. The state is completed and renamed into place first, then the interrupt acts."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    store = backup.TrainingBackup(tmp_path / "backup")
    write_arrays = atomic.save_npz

    def interrupted_while_writing(path, **arrays):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # time for the handler to run, were it not held back
        write_arrays(path, **arrays)

    monkeypatch.setattr(atomic, "save_npz", interrupted_while_writing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            store.save(1, model, {}, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert leftovers(tmp_path) == []
    assert json.loads((store.directory / backup.STATE).read_text())["epoch"] == 1
    assert store.has_state()
