"""The DVC workflow as users run it, in a temporary git + DVC copy of this repository.

Fixture data come through the real fetch stage ($VAE_DATA_SOURCES names file:// and local-index
sources), params are tiny, and no test touches the network. The module's ``repo`` fixture is a
copy of the pipeline reproduced from scratch and committed (once a session, see tests/repos.py);
every test starts from that commit and puts the repository back when it is done, so that each
test also passes alone.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.repos import Repo, dvc, git, reproduced_copy, reset, run, stages_run

pytestmark = pytest.mark.pipeline

STAGES = {
    "fetch",
    "fetch_larochelle",
    "prepare",
    "train",
    "evaluate",
    "inference_gap",
    "figures",
    "explorer",
    "ais",
}
AFTER_TRAIN = ["ais", "evaluate", "explorer", "figures", "inference_gap", "train"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """The pipeline reproduced from scratch (once a session) and committed, copied for this
    module: (repo, output of that dvc repro)."""
    return reproduced_copy(tmp_path_factory, tmp_path_factory.mktemp("pipeline") / "repo")


@pytest.fixture
def repo(reproduced):
    """The reproduced repository, put back to its commit after the test."""
    repo, _ = reproduced
    yield repo
    reset(repo)


def outputs(repo: Repo) -> dict[str, bytes]:
    files = {}
    for top in ("models", "metrics", "figures"):
        for path in sorted((repo / top).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(repo.path))] = path.read_bytes()
    return files


def test_repro_from_scratch_runs_every_stage_once_then_nothing(reproduced):
    repo, first = reproduced
    ran = stages_run(first)
    assert sorted(ran) == sorted(STAGES), ran
    assert ran.index("fetch") < ran.index("prepare") < ran.index("train") < ran.index("evaluate")
    # pictures first: the cheap stages that draw come right after train, the estimators last
    pictures, estimators = ("figures", "explorer"), ("evaluate", "inference_gap", "ais")
    assert max(map(ran.index, pictures)) < min(map(ran.index, estimators)), ran
    for path in (
        "data/raw/mnist/train_images.npy",
        "data/prepared/info.json",
        "models/inference_network.keras",
        "models/generative_network.keras",
        "metrics/train.json",
        "metrics/evaluate.json",
        "metrics/per_digit.csv",
        "metrics/inference_gap.json",
        "figures/posterior.png",
        "figures/inference_gap.png",
        "figures/true_posterior.png",
        "dvclive/plots/metrics/valid/elbo.tsv",
    ):
        assert (repo / path).exists(), path
    second = dvc(repo, "repro")
    assert stages_run(second) == []
    assert "Data and pipelines are up to date." in second.stdout
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    assert git(repo, "status", "--porcelain") == ""  # outputs are either git-tracked or ignored


def test_exp_run_latent_dim_reruns_train_and_what_reads_the_model_only(repo):
    result = dvc(repo, "exp", "run", "-S", "latent_dim=3")
    assert sorted(stages_run(result)) == AFTER_TRAIN
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = [e for commit in shown for e in (commit.get("experiments") or [])]
    assert experiments, shown
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["latent_dim"] == 3
    assert "test_log_px" in data["metrics"]["metrics/evaluate.json"]["data"]
    assert "amortization_gap" in data["metrics"]["metrics/inference_gap.json"]["data"]


def test_changing_binarization_reruns_prepare_and_train_but_not_fetch(repo):
    """Up to train (the target): that new networks re-run what reads them is the latent_dim test's.
    fetch_larochelle reads binarization to know whether it has anything to fetch."""
    ran = stages_run(dvc(repo, "exp", "run", "-S", "binarization=dynamic", "train"))
    assert sorted(ran) == ["fetch_larochelle", "prepare", "train"]


@pytest.mark.parametrize(
    "override, stages",
    [
        ("eval_samples=60", ["ais", "evaluate"]),  # ais compares with importance sampling's k
        ("gap_steps=20", ["ais", "inference_gap"]),  # and reads the gaps' per-image estimates
        ("explorer_points=50", ["explorer"]),
        ("ais_steps=[3,9]", ["ais"]),
    ],
)
def test_an_evaluation_param_reruns_only_its_stage_and_what_reads_it(repo, override, stages):
    assert sorted(stages_run(dvc(repo, "exp", "run", "-S", override))) == stages


@pytest.mark.parametrize(
    "override, reason",
    [
        (
            "latent_dim=0",
            "error: params.yaml: latent_dim = 0 is not allowed; expected an integer >= 1",
        ),
        ("learning_rate=1e30", "error: training diverged in epoch 1"),
    ],
)
def test_a_failing_stage_says_why_in_one_line_and_checkout_restores_the_outputs(
    repo, override, reason
):
    lock, before = (repo / "dvc.lock").read_bytes(), outputs(repo)
    result = dvc(repo, "exp", "run", "-S", override, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(reason), result.stderr
    assert (repo / "dvc.lock").read_bytes() == lock
    assert not (repo / "models").exists()  # DVC removed the outputs before running the stage
    assert [p.name for p in repo.path.rglob("*.staging")] == []  # nothing half-written
    # the README's recovery: dvc.lock still describes the previous outputs
    git(repo, "checkout", "--", "metrics", "dvclive", "figures")
    dvc(repo, "checkout")
    assert outputs(repo) == before


def test_a_configuration_computed_before_comes_back_from_the_run_cache(repo):
    """Run A (the commit), run B (latent_dim 3), run A again: nothing trains or evaluates, every
    stage is restored from DVC's run-cache, byte for byte; and dvc exp run of B too."""
    before = outputs(repo)
    dvc(repo, "exp", "run", "-S", "latent_dim=3")
    git(repo, "checkout", "--", "params.yaml")
    again = dvc(repo, "repro")
    assert stages_run(again) == []
    cached = re.findall(
        r"Stage '(\w+)' is cached - skipping run, checking out outputs", again.stdout
    )
    assert sorted(cached) == AFTER_TRAIN, again.stdout
    assert outputs(repo) == before
    again_b = dvc(repo, "exp", "run", "-S", "latent_dim=3")
    assert stages_run(again_b) == []
    assert "is cached - skipping run" in again_b.stdout


def test_a_comment_in_train_retrains_to_the_same_bytes_and_nothing_downstream_reruns(repo):
    before = outputs(repo)
    with open(repo / "stages" / "train.py", "a", encoding="utf-8") as f:
        f.write("# a comment changes the code's hash, not what it computes\n")
    result = dvc(repo, "repro")
    assert stages_run(result) == ["train"], result.stdout
    after = outputs(repo)
    assert after.pop("metrics/train.json") != before.pop("metrics/train.json")  # timings
    assert after == before


def test_metrics_params_and_plots_diff_between_branches_in_a_fresh_clone(repo, tmp_path):
    git(repo, "branch", "-f", "A", "main")
    git(repo, "checkout", "-q", "-B", "B")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["latent_dim"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "latent_dim 3")

    clone = Repo(tmp_path / "clone", repo.env)
    run(repo, "git", "clone", "-q", str(repo.path), str(clone.path))
    git(clone, "checkout", "-q", "A")
    assert not (clone / ".dvc" / "cache").exists()  # nothing but git

    metrics = json.loads(dvc(clone, "metrics", "diff", "A", "B", "--json").stdout)
    changed = metrics["metrics/evaluate.json"]["test_log_px"]
    assert changed["old"] != changed["new"]
    assert "best_valid_elbo" in metrics["metrics/train.json"]
    params_diff = json.loads(dvc(clone, "params", "diff", "A", "B", "--json").stdout)
    assert {k: params_diff["params.yaml"]["latent_dim"][k] for k in ("old", "new")} == {
        "old": 2,
        "new": 3,
    }

    plots = dvc(clone, "plots", "diff", "A", "B", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "posterior.png" in html and "ELBO per epoch" in html, plots.stdout


def test_a_killed_temporary_experiment_resumes_from_its_backup_when_run_again(repo):
    """Queued and --temp experiments run in a copy under .dvc/tmp/exps/ that DVC deletes; the
    training backup lives in the parent repository ($DVC_ROOT), so running the same experiment
    again resumes it. (--temp runs in the foreground with the queue's executor; the target
    ``train`` stops the experiment there, since what runs after training is not in question.)"""
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-S", "epochs=20"]
    command += ["-S", "patience=20", "-S", "hidden_units=[256,256]", "train"]
    process = subprocess.Popen(
        command,
        cwd=repo.path,
        env=repo.env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    # a state in place: <key>.staging/ holds one for a moment before its rename to <key>/
    while not [
        p for p in (repo / ".train-backup").glob("*/state.json") if "." not in p.parent.name
    ]:
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the machine restarts, say
    process.wait()
    again = run(repo, *command)
    output = again.stdout + again.stderr
    assert re.search(r"resuming from epoch [1-9]\d* \(backup \S*\.train-backup/", output), output
    assert not list((repo / ".train-backup").iterdir())  # removed once training completed
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    runs = [  # the killed run is listed too, without metrics
        e["revs"][0].get("data", {}).get("metrics", {}).get("metrics/train.json", {}).get("data")
        for commit in shown
        for e in (commit.get("experiments") or [])
    ]
    (finished,) = [run for run in runs if run and run["epochs_run"] == 20]
    assert finished["resumed_from_epoch"] >= 1
