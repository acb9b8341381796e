"""All-or-nothing stage outputs.

A stage writes every output into a staging path next to its final place and moves them all
into place only after the last one is written. A stage that fails (bad param, bad data, a
diverged training run) therefore leaves the outputs of the previous run as they were; dvc.yaml
marks the outputs ``persist: true`` so that DVC does not delete them before the stage starts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


class StagedOutputs:
    """Context manager: ``with StagedOutputs() as out: d = out.directory("models") ...``.

    On a clean exit every staged path replaces its final path; on an exception the staged
    paths are removed and the final paths are untouched.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def _stage(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.staging"
        _remove(staging)
        self._staged.append((staging, final))
        return staging

    def directory(self, final: str | os.PathLike) -> Path:
        """An empty staging directory that will become ``final``."""
        staging = self._stage(final)
        staging.mkdir()
        return staging

    def file(self, final: str | os.PathLike) -> Path:
        """A staging file path that will become ``final``."""
        return self._stage(final)

    def json(self, final: str | os.PathLike, data: dict) -> None:
        """Stage ``data`` as pretty-printed JSON (stable key order, newline at the end)."""
        self.file(final).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for staging, _ in self._staged:
                _remove(staging)
            return
        for staging, _ in self._staged:
            if not staging.exists():
                raise FileNotFoundError(f"staged output {staging} was never written")
        for staging, final in self._staged:
            old = final.parent / f".{final.name}.old"
            _remove(old)
            if final.exists() or final.is_symlink():
                os.replace(final, old)
            os.replace(staging, final)
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
