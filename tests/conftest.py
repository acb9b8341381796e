import os
import sys
from contextlib import chdir
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.linear_gaussian import linear_gaussian  # noqa: E402, F401  (a fixture)

# The session's tiny pipeline is reproduced once, by the first module that asks
# (tests/repos.py), while any other module that asks waits on a file lock. test_pipeline.py
# builds it, so it goes first; test_remote.py, the other module that copies it, goes after a few
# minutes of other modules, when the build is done, instead of idling its worker.
# (pytest.ini turns off xdist's reordering by test count, which would undo this.)
PLACE = {"test_pipeline.py": ("", 0), "test_remote.py": ("test_explorer.py", 1)}  # sort keys


def pytest_collection_modifyitems(items):
    # stable: a module's tests keep their order; the other modules stay in name order
    items.sort(key=lambda item: PLACE.get(item.path.name, (item.path.name, 0)))


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run the test with a fresh current directory (stages read and write relative paths)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


TINY_PARAMS = {
    "latent_dim": 2,
    "hidden_units": [32],
    "epochs": 3,
    "batch_size": 50,
    "learning_rate": 0.003,
    "patience": 5,
    "eval_samples": 50,
    "valid_eval_samples": 20,
    "manifold_grid": 5,
    # inference_gap and ais cost mostly their compilation; these keep the rest small (the
    # estimators' own tests, test_inference_gap and test_ais, set what they need)
    "gap_examples": 8,
    "gap_steps": 10,
    "gap_samples": 50,
    "ais_examples": 4,
    "ais_steps": [2, 5],
    "ais_chains": 2,
    "ais_leapfrog_steps": 3,
    "bdmc_examples": 0,
}


def write_params(directory: Path, **overrides) -> Path:
    """The repository's params.yaml with TINY_PARAMS and ``overrides``, in ``directory``."""
    import yaml

    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values.update(TINY_PARAMS)
    values.update(overrides)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def make_workspace(directory: Path, train: bool = True, **overrides) -> Path:
    """A directory holding fixture data, prepared splits and (optionally) a trained tiny model."""
    import numpy as np

    from stages import prepare
    from tests import fixtures

    directory.mkdir(parents=True, exist_ok=True)
    write_params(directory, **overrides)
    with chdir(directory):
        Path("data/raw/mnist").mkdir(parents=True, exist_ok=True)
        for name, array in fixtures.mnist_arrays().items():
            np.save(f"data/raw/mnist/{name}.npy", array)
        prepare.main()
        if train:
            from stages import train as train_stage

            train_stage.main()
    return directory


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory):
    """Fixture data and a tiny model trained by the train stage (latent_dim 2), shared read-only."""
    return make_workspace(tmp_path_factory.mktemp("trained"))


def git_repository_env(**extra) -> dict:
    """The environment for git and dvc in a temporary repository: no analytics, no Studio, a
    committer, and this interpreter's bin directory first on PATH."""
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        DVC_NO_ANALYTICS="1",
        DVC_STUDIO_OFFLINE="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        **extra,
    )
