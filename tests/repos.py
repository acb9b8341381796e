"""Temporary git + DVC copies of this project, with tiny params, for the pipeline tests.

Reproducing the pipeline from scratch is the slowest step of the suite, so it happens once per
test session: the first test module that asks for it builds the reproduced repository under a
file lock in the session's shared temporary directory (shared by the pytest-xdist workers too),
and every module that needs one starts from its own copy.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import fixtures
from tests.conftest import REPO, git_repository_env, write_params

GENERATED = ("dvc.lock", "metrics", "figures", "dvclive", "models", "data")


def run(repo: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=repo.path, env=repo.env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, check=check)


def git(repo: Path, *args: str) -> str:
    return run(repo, "git", *args).stdout


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr)


@dataclass
class Repo:
    """A repository directory and the environment its commands run in."""

    path: Path
    env: dict

    def __truediv__(self, name) -> Path:
        return self.path / name


def make_repo(directory: Path, sources: Path) -> Repo:
    """A git + DVC repository with this project's tracked files and tiny params, committed."""
    directory.mkdir(parents=True)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if name.split("/")[0] in GENERATED:
            continue
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, directory / name)
    write_params(directory)
    env = git_repository_env(VAE_DATA_SOURCES=str(sources))
    repo = Repo(directory, env)
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "config", "--local", "core.check_update", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline with tiny params")
    return repo


def reset(repo: Repo) -> None:
    """Back to the last commit: git-tracked outputs from git, cached ones from the DVC cache."""
    git(repo, "checkout", "-q", "-f", "main")
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-qfd", "--", "stages", "params.yaml")
    dvc(repo, "checkout", "--force")


def session_directory(tmp_path_factory) -> Path:
    """The temporary directory of this test session, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def reproduced_template(shared: Path) -> Path:
    """A directory holding ``repo``, this project with tiny params reproduced from scratch by
    ``dvc repro`` and committed, ``mirror``, its fixture data sources, and ``repro.json``, the
    sources file and what that ``dvc repro`` printed. Built once under ``shared``; later callers
    wait for it and reuse it (read it only: copy it with :func:`reproduced_copy`)."""
    template = shared / "reproduced-pipeline"
    with open(shared / "reproduced-pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (template / "repro.json").exists():  # not built, or a build that failed
            shutil.rmtree(template, ignore_errors=True)
            sources = fixtures.write_sources(template / "mirror")
            repo = make_repo(template / "repo", sources)
            first = dvc(repo, "repro")
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", "reproduced")
            built = {"sources": str(sources), "stdout": first.stdout, "stderr": first.stderr}
            (template / "repro.json").write_text(json.dumps(built))
    return template


def reproduced_copy(tmp_path_factory, directory: Path) -> tuple[Repo, subprocess.CompletedProcess]:
    """A copy, in ``directory``, of the session's reproduced repository (its git history,
    workspace and DVC cache; not .dvc/tmp, DVC's per-repository state), and what its first
    ``dvc repro`` printed."""
    template = reproduced_template(session_directory(tmp_path_factory))
    shutil.copytree(
        template / "repo",
        directory,
        symlinks=True,
        ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [],
    )
    built = json.loads((template / "repro.json").read_text())
    first = subprocess.CompletedProcess(["dvc", "repro"], 0, built["stdout"], built["stderr"])
    env = git_repository_env(VAE_DATA_SOURCES=built["sources"])
    return Repo(directory, env), first
