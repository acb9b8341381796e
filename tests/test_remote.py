"""Experiments and trained models shared between machines through a Git remote and a DVC remote.

In a temporary directory: a bare Git repository (``origin``), a local-directory DVC remote
(``storage``, committed in .dvc/config as the default remote) and clones of a tiny-fixture copy
of this project, each clone standing for one machine. The module's ``machines`` fixture puts the
pipeline, reproduced once (a copy of the session's reproduced repository, tests/repos.py), on a
publishing machine, publishes it (``git push`` and ``dvc push``) and clones it twice ("A" and
"B"), each of which gets the baseline's outputs with ``dvc pull``. A test that changes a
machine's workspace puts it back (git, then ``dvc checkout``), and the remote is only ever added
to, so that each test also passes alone. The HTTP remote is the storage directory served by
``python -m http.server`` on 127.0.0.1; nothing else touches the network.
"""

import csv
import hashlib
import io
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.repos import Repo, dvc, git, reproduced_copy, reset, run, stages_run

pytestmark = pytest.mark.pipeline

UP_TO_DATE = "Data and pipelines are up to date."
PULL_FAILED = "ERROR: failed to pull data from the cloud - Checkout failed for following targets:"
# a1 runs the whole pipeline; b1 stops at evaluate, as the sweep below does (what B checks of
# b1 is its networks and metrics)
EXPERIMENT_ARGS = {"a1": "-n a1 -S latent_dim=3", "b1": "-n b1 -S latent_dim=4 evaluate"}
QUEUE_DEADLINE_S = 900  # a guard against a hung queue, not a timing assertion


@dataclass
class Machines:
    """The remotes, the machine that published the baseline, and the two machines A and B."""

    origin: Path  # the bare Git repository
    storage: Path  # the local-directory DVC remote
    publisher: Repo
    a: Repo
    b: Repo

    def clone(self, directory: Path) -> Repo:
        """A fresh machine: a clone of origin, with nothing in its DVC cache."""
        run(self.publisher, "git", "clone", "-q", str(self.origin), str(directory))
        repo = Repo(directory, self.publisher.env)
        dvc(repo, "config", "--local", "core.check_update", "false")
        return repo

    def cached(self) -> dict[str, list[str]]:
        """Stage -> the outputs DVC caches (and a remote holds), from dvc.yaml."""
        return cached_outputs(self.publisher)

    def cached_paths(self, *leaving_out: str) -> list[str]:
        return sorted(p for paths in self.cached().values() for p in paths if p not in leaving_out)


@dataclass
class Made:
    """What an experiment made on the machine that ran it."""

    models: dict[str, bytes]
    evaluate: dict
    lock: dict[str, str]  # output path -> DVC hash, from its dvc.lock


def files(repo: Repo, *tops: str) -> dict[str, bytes]:
    """Every file under ``tops`` (every file of the workspace but .git/ and .dvc/tmp/ without)."""
    found = {}
    for top in tops or (".",):
        root = repo / top
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            name = path.relative_to(repo.path).as_posix()
            if path.is_file() and not name.startswith((".git/", ".dvc/tmp/")):
                found[name] = path.read_bytes()
    return found


def cached_outputs(repo: Repo) -> dict[str, list[str]]:
    """Stage -> its outputs that DVC caches (outs, metrics and plots not marked cache: false)."""
    found = {}
    for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
                if (options or {}).get("cache", True):
                    found.setdefault(name, []).append(path)
    return found


def lock_hashes(lock_text: str) -> dict[str, str]:
    """Output path -> md5 of every DVC-cached output of a dvc.lock."""
    lock = yaml.safe_load(lock_text)
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if "md5" in out
    }


def checkout_failed(stderr: str) -> set[str]:
    """The targets of DVC's "Checkout failed for following targets: ... Is your cache up to
    date?" error (one a line, in no fixed order); empty without that error."""
    found = re.search(
        r"Checkout failed for following targets:\n(.*?)\nIs your cache up to date\?", stderr, re.S
    )
    return set(found.group(1).splitlines()) if found else set()


def object_path(root: Path, md5: str) -> Path:
    """Where a DVC cache or a local/HTTP remote keeps an object (DVC 3 layout)."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


def directory_objects(root: Path, dir_md5: str) -> list[Path]:
    """The paths, under ``root``, of a directory output's .dir object and of its files' objects."""
    listing = json.loads(object_path(root, dir_md5).read_text())
    return [object_path(root, dir_md5)] + [object_path(root, entry["md5"]) for entry in listing]


def experiments_shown(repo: Repo) -> dict[str, dict]:
    """Experiment name -> its rev and data, from ``dvc exp show --json``."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    return {
        experiment["name"]: {"rev": experiment["revs"][0]["rev"], **experiment["revs"][0]["data"]}
        for commit in shown
        for experiment in commit.get("experiments") or []
    }


def param(data: dict, key: str):
    return data["params"]["params.yaml"]["data"][key]


def metric(data: dict, path: str, key: str):
    return data["metrics"][path]["data"][key]


def queue_statuses(repo: Repo) -> dict[str, str]:
    """Task name -> status (Queued, Running, Success, Failed, ...) from ``dvc queue status``."""
    statuses = {}
    for line in dvc(repo, "queue", "status").stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and re.fullmatch(r"[0-9a-f]{7}", words[0]):
            statuses[words[1]] = words[-1]
    return statuses


def wait_for_queue(repo: Repo, names: list[str]) -> dict[str, str]:
    """Poll ``dvc queue status`` until every task in ``names`` has finished; their statuses."""
    deadline = time.monotonic() + QUEUE_DEADLINE_S
    while True:
        statuses = queue_statuses(repo)
        if all(statuses.get(name) in ("Success", "Failed") for name in names):
            return {name: statuses[name] for name in names}
        assert time.monotonic() < deadline, f"the queue did not finish: {statuses}"
        time.sleep(2)


@contextmanager
def serve(directory: Path, log: Path) -> Iterator[str]:
    """``directory`` served read-only, as a static file host would, by ``python -m http.server``
    on 127.0.0.1 and a free port; yields its URL; the requests it served are logged in ``log``."""
    command = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"]
    with open(log, "w", encoding="utf-8") as errors:
        server = subprocess.Popen(
            [*command, "--directory", str(directory)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...) ..."
        found = re.search(r"port (\d+)", line)
        assert found, f"http.server did not start: {line!r} {log.read_text()}"
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        server.terminate()
        server.wait()
        server.stdout.close()


@pytest.fixture(scope="module")
def machines(tmp_path_factory) -> Machines:
    """The baseline reproduced once on a publishing machine and published to origin and the DVC
    remote; machines A and B are clones of origin that got its outputs by ``dvc pull``."""
    root = tmp_path_factory.mktemp("remote")
    origin, storage = root / "origin.git", root / "storage"
    publisher, _ = reproduced_copy(tmp_path_factory, root / "publisher")
    run(publisher, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    git(publisher, "remote", "add", "origin", str(origin))
    # An absolute path: DVC resolves a relative local remote in a commit's .dvc/config against
    # the root of the commit's tree (dvc exp push of an experiment would write to /storage).
    dvc(publisher, "remote", "add", "-d", "storage", str(storage))
    git(publisher, "add", "-A")
    git(publisher, "commit", "-qm", "a DVC remote")
    dvc(publisher, "push")
    git(publisher, "push", "-q", "origin", "main")
    found = Machines(origin, storage, publisher, a=None, b=None)
    found.a = found.clone(root / "A")
    found.b = found.clone(root / "B")
    for machine in (found.a, found.b):
        dvc(machine, "pull")
    return found


@pytest.fixture(scope="module")
def experiments(machines) -> dict:
    """a1 (latent_dim 3) run on A while b1 (latent_dim 4, up to ``evaluate``) runs on B, then
    each pushed with ``dvc exp push origin NAME``: what each made, its push's output, and which
    of a1's model objects the DVC remote held just before A pushed. Both machines are put back
    to the baseline."""
    runs = {"a1": machines.a, "b1": machines.b}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "dvc", "exp", "run", *EXPERIMENT_ARGS[name].split()],
            cwd=machine.path,
            env=machine.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, machine in runs.items()
    }
    for name, process in running.items():
        output = process.communicate()[0]
        assert process.returncode == 0, f"dvc exp run -n {name} failed:\n{output}"
    made = {
        name: Made(
            models=files(machine, "models"),
            evaluate=json.loads((machine / "metrics" / "evaluate.json").read_text()),
            lock=lock_hashes((machine / "dvc.lock").read_text()),
        )
        for name, machine in runs.items()
    }
    a_cache = machines.a / ".dvc" / "cache"
    a1_objects = directory_objects(a_cache, made["a1"].lock["models"])
    held_before = [o for o in a1_objects if (machines.storage / o.relative_to(a_cache)).exists()]
    pushed = {name: dvc(machine, "exp", "push", "origin", name) for name, machine in runs.items()}
    for machine in runs.values():
        reset(machine)
    return {"made": made, "pushed": pushed, "a1_objects_held_before": held_before}


def test_a_second_machine_gets_the_baseline_by_dvc_pull_not_by_reproducing(machines):
    """B has the publisher's outputs byte for byte, from the DVC remote: nothing to reproduce."""
    b = machines.b
    outputs = machines.cached_paths()
    assert files(b, *outputs) == files(machines.publisher, *outputs)
    assert UP_TO_DATE in dvc(b, "status").stdout
    assert stages_run(dvc(b, "repro")) == []
    assert git(b, "status", "--porcelain") == ""


def test_exp_push_sends_the_experiment_to_git_and_its_cached_outputs_to_the_dvc_remote(
    machines, experiments
):
    """``dvc exp push origin a1`` pushed the experiment's Git ref to origin and, without being
    asked, the objects of its networks to the default DVC remote, which had none of them."""
    a1_models = experiments["made"]["a1"].lock["models"]
    assert experiments["a1_objects_held_before"] == []
    objects = directory_objects(machines.storage, a1_models)
    assert len(objects) == 1 + len(experiments["made"]["a1"].models)  # the .dir and each file
    assert all(path.is_file() for path in objects)
    for name in ("a1", "b1"):
        output = experiments["pushed"][name].stdout
        assert f"Pushed experiment {name} to Git remote 'origin'." in output
        assert re.search(r"\d+ files? uploaded", output), output
    refs = run(machines.publisher, "git", "ls-remote", str(machines.origin), "refs/exps/*").stdout
    assert {ref.rsplit("/", 1)[1] for ref in refs.splitlines()} >= {"a1", "b1"}


def test_one_machine_sees_both_experiments_and_gets_a1s_networks_without_training(
    machines, experiments
):
    """On B, ``dvc exp pull origin a1`` brings A's experiment and its networks' objects; ``dvc exp
    show`` lists a1 and b1 with their metrics; ``dvc exp apply a1`` and ``dvc pull`` give A's
    networks byte for byte, after which nothing is out of date and ``dvc repro`` runs no stage;
    ``dvc metrics diff a1 b1`` compares the two machines' runs."""
    b, made = machines.b, experiments["made"]
    a1_objects = directory_objects(machines.storage, made["a1"].lock["models"])
    b_cache = b / ".dvc" / "cache"
    in_b_cache = lambda: [(b_cache / o.relative_to(machines.storage)).exists() for o in a1_objects]
    assert not any(in_b_cache())  # B never computed a1
    try:
        pulled = dvc(b, "exp", "pull", "origin", "a1")
        assert "Pulled experiment '['a1']' from Git remote 'origin'." in pulled.stdout
        assert all(in_b_cache())  # exp pull fetched the cached outputs too

        shown = experiments_shown(b)
        assert {name: param(shown[name], "latent_dim") for name in ("a1", "b1")} == {
            "a1": 3,
            "b1": 4,
        }
        for name in ("a1", "b1"):
            log_px = metric(shown[name], "metrics/evaluate.json", "test_log_px")
            assert log_px == made[name].evaluate["test_log_px"]

        dvc(b, "exp", "apply", "a1")
        dvc(b, "pull")
        assert files(b, "models") == made["a1"].models  # the networks A trained
        assert UP_TO_DATE in dvc(b, "status").stdout
        assert stages_run(dvc(b, "repro")) == []

        diff = json.loads(dvc(b, "metrics", "diff", "a1", "b1", "--json").stdout)
        test_log_px = diff["metrics/evaluate.json"]["test_log_px"]
        assert (test_log_px["old"], test_log_px["new"]) == (
            made["a1"].evaluate["test_log_px"],
            made["b1"].evaluate["test_log_px"],
        )
    finally:
        reset(b)


def test_the_readmes_exp_show_command_prints_a_few_columns_best_first(machines, experiments):
    """The README's ``dvc exp show`` command, on B where b1 ran and a1 is pulled: at most 15
    columns (``dvc exp show`` alone has over a hundred on this pipeline), the two experiments,
    the best test log p(x) first."""
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text().replace("\\\n", " ")
    command = shlex.split(re.search(r"^(dvc exp show .*?)\s+#", readme, re.M).group(1))
    b = machines.b
    try:
        dvc(b, "exp", "pull", "origin", "a1")
        assert len(next(csv.reader(io.StringIO(dvc(b, "exp", "show", "--csv").stdout)))) > 100
        rows = list(csv.reader(io.StringIO(dvc(b, *command[1:], "--csv").stdout)))
        assert len(rows[0]) <= 15, rows[0]
        column = rows[0].index("test_log_px")
        shown = [(row[0], float(row[column])) for row in rows[1:] if row[0]]
        assert sorted(name for name, _ in shown) == ["a1", "b1"]
        assert [value for _, value in shown] == sorted((value for _, value in shown), reverse=True)
    finally:
        reset(b)


def test_exp_pull_no_cache_brings_only_git_and_dvc_pull_then_brings_the_networks(
    machines, experiments, tmp_path
):
    """On a fresh machine, ``dvc exp pull --no-cache`` transfers the experiment's Git commit only:
    ``dvc exp apply a1`` applies its params, dvc.lock and metrics but cannot check out its
    networks (DVC says so and exits non-zero); ``dvc pull`` then fetches them from the DVC
    remote, and the workspace is a1's, with nothing to reproduce."""
    fresh = machines.clone(tmp_path / "fresh")
    dvc(fresh, "exp", "pull", "--no-cache", "origin", "a1")
    assert not (fresh / ".dvc" / "cache").exists()
    applied = dvc(fresh, "exp", "apply", "a1", check=False)
    assert applied.returncode != 0
    assert checkout_failed(applied.stderr) == set(machines.cached_paths())  # none in the cache
    assert yaml.safe_load((fresh / "params.yaml").read_text())["latent_dim"] == 3
    assert not (fresh / "models").exists()
    dvc(fresh, "pull")
    assert files(fresh, "models") == experiments["made"]["a1"].models
    assert UP_TO_DATE in dvc(fresh, "status").stdout
    assert stages_run(dvc(fresh, "repro")) == []


def test_results_of_both_machines_become_rows_of_results_csv(machines, experiments):
    """After ``dvc exp pull origin b1`` on A, ``tools/results.py add NAME --exp NAME`` adds a row
    for each machine's experiment to results/results.csv, with its params and metrics."""
    a, made = machines.a, experiments["made"]
    try:
        dvc(a, "exp", "pull", "origin", "b1")
        for name in ("a1", "b1"):
            command = f"dvc exp run {EXPERIMENT_ARGS[name]}"
            run(
                a,
                sys.executable,
                "tools/results.py",
                "add",
                name,
                "--exp",
                name,
                "--command",
                command,
            )
        with open(a / "results" / "results.csv", newline="", encoding="utf-8") as f:
            rows = {row["name"]: row for row in csv.DictReader(f)}
        for name, latent_dim in (("a1", 3), ("b1", 4)):
            assert rows[name]["latent_dim"] == str(latent_dim)
            assert float(rows[name]["test_log_px"]) == made[name].evaluate["test_log_px"]
            assert rows[name]["command"] == f"dvc exp run {EXPERIMENT_ARGS[name]}"
            assert rows[name]["device"]  # which kind of machine ran it
        # b1 ran up to evaluate: its evaluate.csv is paired with a1's, image by image; the later
        # stages' files it carries are its baseline's, not its own
        compared = run(a, sys.executable, "tools/results.py", "compare", "a1", "b1").stdout
        paired = [line for line in compared.splitlines() if "A - B" in line]
        assert len(paired) == 2 and all("every test image" in line for line in paired), compared
        assert "data/estimates/ais.csv: not a result of b1 (its run did not run 'ais')" in compared
    finally:
        reset(a)


def test_a_queued_sweep_is_pushed_and_pulled_like_any_experiment(machines):
    """A queues ``-S seed=0,1`` as sweep-1 and sweep-2 (up to ``evaluate``: the later stages add
    nothing to what is pushed), runs the queue with ``dvc queue start`` and pushes both by name;
    B pulls them and lists them with their metrics and networks."""
    a, b = machines.a, machines.b
    names = ["sweep-1", "sweep-2"]
    try:
        dvc(a, "exp", "run", "--queue", "-n", "sweep", "-S", "seed=0,1", "evaluate")
        assert "Started '1' new experiments task queue worker." in dvc(a, "queue", "start").stdout
        assert wait_for_queue(a, names) == {name: "Success" for name in names}
        pushed = dvc(a, "exp", "push", "origin", *names)
        pushed_names = r"Pushed experiment (sweep-1 and sweep-2|sweep-2 and sweep-1) to Git remote"
        assert re.search(pushed_names, pushed.stdout), pushed.stdout

        dvc(b, "exp", "pull", "origin", *names)
        shown = experiments_shown(b)
        assert {name: param(shown[name], "seed") for name in names} == {"sweep-1": 0, "sweep-2": 1}
        for name in names:
            assert isinstance(metric(shown[name], "metrics/evaluate.json", "test_log_px"), float)
            lock = lock_hashes(git(b, "show", f"{shown[name]['rev']}:dvc.lock"))
            objects = directory_objects(b / ".dvc" / "cache", lock["models"])
            assert all(path.is_file() for path in objects), name  # its networks came along
    finally:
        dvc(a, "queue", "stop")
        reset(a)
        reset(b)


@pytest.fixture
def web(machines, tmp_path) -> Iterator[tuple[str, Path]]:
    """The DVC remote directory served over HTTP: (URL, the server's request log)."""
    log = tmp_path / "http.log"
    with serve(machines.storage, log) as url:
        yield url, log


def consumer(machines: Machines, directory: Path, url: str) -> Repo:
    """A fresh clone whose default DVC remote is ``url`` (in .dvc/config.local, not committed)."""
    repo = machines.clone(directory)
    dvc(repo, "remote", "add", "--local", "-d", "web", url)
    return repo


def test_a_published_run_is_pulled_over_http_and_repro_then_runs_nothing(machines, web, tmp_path):
    """Publishing is ``dvc push`` of a committed run (the publisher did it). A fresh clone with the
    remote served read-only over HTTP gets every output of the committed run, byte for byte and
    through HTTP, and then nothing is out of date: ``dvc repro`` runs no stage."""
    url, log = web
    fresh = consumer(machines, tmp_path / "fresh", url)
    dvc(fresh, "pull")
    outputs = machines.cached_paths()
    published = files(machines.publisher, *outputs)
    assert files(fresh, *outputs) == published
    network = hashlib.md5(published["models/generative_network.keras"]).hexdigest()
    assert f'"GET /files/md5/{network[:2]}/{network[2:]} HTTP/1.1" 200' in log.read_text()
    assert UP_TO_DATE in dvc(fresh, "status").stdout
    assert stages_run(dvc(fresh, "repro")) == []
    assert git(fresh, "status", "--porcelain") == ""


def test_pulling_only_the_networks_reruns_what_is_missing_never_train(machines, web, tmp_path):
    """``dvc pull models`` fetches the networks alone; ``dvc repro`` then runs exactly the stages
    with a DVC-cached output that was not pulled (fetch, fetch_larochelle and prepare make the
    data again, byte for byte; inference_gap, ais and explorer their estimates and page), never
    train, and the stages that only read the networks and the data, unchanged, do not run."""
    url, _ = web
    fresh = consumer(machines, tmp_path / "fresh", url)
    dvc(fresh, "pull", "models")
    assert not (fresh / "data" / "prepared").exists()
    networks = files(fresh, "models")
    assert networks == files(machines.publisher, "models")
    ran = stages_run(dvc(fresh, "repro"))
    missing = {stage for stage, outputs in machines.cached().items() if set(outputs) - {"models"}}
    assert {"fetch", "prepare"} <= missing and "train" not in missing
    assert sorted(ran) == sorted(missing)
    assert files(fresh, "models") == networks
    assert UP_TO_DATE in dvc(fresh, "status").stdout


def test_the_networks_are_an_artifact_that_dvc_artifacts_get_fetches(machines, tmp_path):
    """dvc.yaml declares models/ as the artifact vae-mnist; the publisher registers a version
    (a GTO tag, vae-mnist@v1.0.0, pushed to origin). From an empty directory, ``dvc artifacts
    get`` of the Git remote fetches the networks of the latest version from its DVC remote, byte
    for byte, and they load with the README's snippet in a fresh process, no repository around."""
    from tests.conftest import REPO

    artifact = yaml.safe_load((machines.publisher / "dvc.yaml").read_text())["artifacts"]
    assert artifact["vae-mnist"]["type"] == "model" and artifact["vae-mnist"]["path"] == "models"
    version = "vae-mnist@v1.0.0"
    if version not in git(machines.publisher, "tag", "--list"):  # the remote is only added to
        git(machines.publisher, "tag", "-a", version, "-m", "Registering vae-mnist v1.0.0")
        git(machines.publisher, "push", "-q", "origin", version)
    empty = Repo(tmp_path / "empty", machines.publisher.env)
    empty.path.mkdir()
    dvc(empty, "artifacts", "get", str(machines.origin), "vae-mnist")
    assert files(empty, "models") == files(machines.publisher, "models")
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the trained networks without this repository", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = "import numpy as np\nx = np.zeros((3, 784), np.float32)\n" + snippet
    script += "print(tuple(loc.shape), tuple(p_x_given_z.logits.shape))\n"
    loaded = run(empty, sys.executable, "-c", script)
    assert loaded.stdout.split("\n")[-2] == "(3, 2) (3, 784)"


def test_an_unreachable_remote_fails_the_pull_and_changes_nothing(machines, tmp_path):
    """With the default remote at a port nobody listens on, ``dvc pull`` exits 1 and the workspace
    and cache are exactly as before. DVC's HTTP remote cannot tell "unreachable" from "does not
    have the files" (fsspec's HTTPFileSystem._exists answers False on a connection error): the
    messages speak of missing cache files, and ``dvc fetch`` and ``dvc status --cloud`` even exit
    0; this test pins that behaviour of the pinned DVC, which the README warns about."""
    fresh = machines.clone(tmp_path / "fresh")
    dvc(fresh, "pull", "data/prepared")  # something to lose, from the committed remote
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        dvc(fresh, "remote", "add", "--local", "-d", "web", url)
        before = files(fresh)
        pulled = dvc(fresh, "pull", check=False)
        assert pulled.returncode == 1
        assert "Everything is up to date." in pulled.stdout  # sic: what its fetch step found
        assert PULL_FAILED in pulled.stderr
        assert checkout_failed(pulled.stderr) == set(machines.cached_paths("data/prepared"))
        assert "Some of the cache files do not exist neither locally nor on remote" in pulled.stderr
        assert files(fresh) == before
        fetched = dvc(fresh, "fetch", check=False)
        assert fetched.returncode == 0 and "do not exist" in fetched.stderr
        cloud = dvc(fresh, "status", "--cloud")  # exit 0: "new" = in the cache, not on the remote
        assert re.search(r"^\tnew:\s+data/prepared$", cloud.stdout, re.M), cloud.stdout
    assert files(fresh) == before


@pytest.fixture(scope="module")
def corrupt_web(machines, tmp_path_factory) -> Iterator[tuple[str, bytes]]:
    """A copy of the DVC remote whose object of models/generative_network.keras holds other
    bytes, served over HTTP: (URL, the bytes)."""
    root = tmp_path_factory.mktemp("corrupt")
    copy = root / "storage"
    shutil.copytree(machines.storage, copy)
    network = (machines.publisher / "models" / "generative_network.keras").read_bytes()
    damaged = object_path(copy, hashlib.md5(network).hexdigest())
    damaged.chmod(0o644)  # DVC keeps its objects read-only
    damaged.write_bytes(b"not the generative network\n")
    with serve(copy, root / "http.log") as url:
        yield url, damaged.read_bytes()


def test_without_verify_a_corrupt_object_in_the_remote_is_checked_out_unnoticed(
    machines, corrupt_web, tmp_path
):
    """DVC's default for a local or HTTP remote is ``verify = false``: ``dvc pull`` trusts the
    remote, exits 0 and puts the corrupt bytes in the workspace, and ``dvc status`` finds nothing
    wrong. The project's own check stops the first stage that reads the file, naming it; and
    only removing the cache's copy lets a good remote repair it."""
    url, corrupt = corrupt_web
    fresh = consumer(machines, tmp_path / "fresh", url)
    dvc(fresh, "pull")
    assert (fresh / "models" / "generative_network.keras").read_bytes() == corrupt
    assert UP_TO_DATE in dvc(fresh, "status").stdout
    evaluate = run(fresh, sys.executable, "-m", "stages.evaluate", check=False)
    assert evaluate.returncode == 1
    assert evaluate.stderr.splitlines()[-1].startswith(
        "error: models/generative_network.keras: not a .keras (zip) archive"
    ), evaluate.stderr
    # The cache file is named by the right hash, so no pull replaces it, not even from a good
    # remote; without the cache and the output, a pull from the good remote repairs the workspace.
    dvc(fresh, "pull", "-r", "storage")
    assert (fresh / "models" / "generative_network.keras").read_bytes() == corrupt
    shutil.rmtree(fresh / ".dvc" / "cache")
    shutil.rmtree(fresh / "models")
    dvc(fresh, "pull", "-r", "storage")
    assert files(fresh, "models") == files(machines.publisher, "models")


def test_a_remote_with_verify_refuses_a_corrupt_object_and_a_good_remote_then_repairs(
    machines, corrupt_web, tmp_path
):
    """With ``dvc remote modify web verify true``, DVC hashes what it downloads: the corrupt
    object is thrown away ("corrupted cache file" in the verbose log), ``dvc pull`` exits 1
    naming models, and neither the workspace nor the cache holds the corrupt bytes; the other
    outputs are checked out intact, and ``dvc pull -r storage`` then completes the workspace."""
    url, _ = corrupt_web
    fresh = consumer(machines, tmp_path / "fresh", url)
    dvc(fresh, "remote", "modify", "--local", "web", "verify", "true")
    pulled = dvc(fresh, "pull", "-v", check=False)
    assert pulled.returncode == 1
    assert PULL_FAILED in pulled.stderr and checkout_failed(pulled.stderr) == {"models"}
    network = hashlib.md5(
        (machines.publisher / "models" / "generative_network.keras").read_bytes()
    ).hexdigest()
    cached = object_path(fresh / ".dvc" / "cache", network)
    assert f"DEBUG: corrupted cache file '{cached}'." in pulled.stdout
    assert not cached.exists()
    assert not (fresh / "models").exists()
    others = machines.cached_paths("models")
    assert files(fresh, *others) == files(machines.publisher, *others)
    dvc(fresh, "pull", "-r", "storage")
    assert files(fresh, "models") == files(machines.publisher, "models")
    assert UP_TO_DATE in dvc(fresh, "status").stdout
