"""The pipeline's own definition, dvc.yaml, read by the code: which params each stage reads, which
stage writes a path, and the one-line error for a file a stage cannot read.

dvc.yaml is the one list of each stage's params (``stage_params``): ``params.load(stage)`` takes
the stage's keys from it, so a key is added to a stage in one place. It is read from the checkout
this code belongs to (not from the working directory), so that a stage run on a fixture
workspace reads the same lists.

A file that a stage reads (prepared splits, models, curves, ...) is another stage's output; when
it is missing or corrupt (a full disk, an interrupted copy) the error names the file, what is
wrong, and how to get it back (``restore_hint``): ``dvc checkout <out>`` for what DVC caches,
``git checkout -- <out>`` for the git-tracked metrics and plots, or ``dvc repro <stage>``.
"""

from __future__ import annotations

import contextlib
import functools
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import yaml

from latent.plumbing.runtime import StageError

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML = ROOT / "dvc.yaml"


class BadFile(StageError):
    """A file a stage reads is missing, truncated, corrupt or not what it should hold."""


@functools.cache
def stages() -> dict[str, dict]:
    """dvc.yaml's stages: name -> definition."""
    return yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))["stages"]


def stage_params(stage: str) -> list[str]:
    """The params dvc.yaml lists for ``stage``, in its order."""
    return list(stages()[stage].get("params", []))


def declared_outputs(definition: dict) -> list[tuple[str, bool]]:
    """(path, cached by DVC) of every out, metric and plot of one stage definition."""
    declared = []
    for kind in ("outs", "metrics", "plots"):
        for entry in definition.get(kind, []):
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            declared.append((path, options.get("cache", True)))
    return declared


def producer(path: str | Path) -> tuple[str, str, bool] | None:
    """(stage, declared output, cached) of the stage whose output holds ``path``, if any."""
    wanted = PurePosixPath(Path(path).as_posix())
    for stage, definition in stages().items():
        for output, cached in declared_outputs(definition):
            if wanted == PurePosixPath(output) or PurePosixPath(output) in wanted.parents:
                return stage, output, cached
    return None


def restore_hint(path: str | Path) -> str:
    """How to get ``path`` back, in words, e.g. "restore it with `dvc checkout models` (or
    `dvc repro train`)"; empty for a file no stage writes."""
    found = producer(path)
    if found is None:
        return ""
    stage, output, cached = found
    checkout = f"dvc checkout {output}" if cached else f"git checkout -- {output}"
    return f"restore it with `{checkout}` (or `dvc repro {stage}`)"


def bad_file(path: str | Path, problem: str) -> BadFile:
    """The one-line error: the file, what is wrong with it, and how to restore it."""
    hint = restore_hint(path)
    return BadFile(f"{path}: {problem}" + (f"; {hint}" if hint else ""))


# What reading a damaged file raises: numpy (ValueError, EOFError), json (ValueError), zip
# archives (.npz, .keras), pandas' parser (ValueError subclasses), YAML, and OSError.
CORRUPTION = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    yaml.YAMLError,
)


@contextlib.contextmanager
def reading(path: str | Path, what: str = "a readable file"):
    """Turn any failure of the reading done inside the block into ``bad_file``: missing, or
    not ``what`` (with the reader's own reason)."""
    try:
        yield
    except BadFile:
        raise
    except FileNotFoundError:
        raise bad_file(path, "not found") from None
    except CORRUPTION as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise bad_file(path, f"not {what} ({reason}): truncated or corrupt") from None
