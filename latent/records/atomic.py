"""All-or-nothing, byte-stable stage outputs.

A stage writes every output into a staging path next to its final place and moves them all
into place only after the last one is written: a stage that fails (bad param, bad data, a
diverged training run) never leaves a half-written output. DVC deletes a stage's outputs before
running it, so after a failure the previous outputs are missing until ``dvc checkout`` (cached
outputs) or ``git checkout`` (the git-tracked metrics and figures) puts them back: dvc.lock still
describes them.

Outputs are byte-stable: the same content gives the same bytes, so a re-run that reproduces the
same weights reproduces the same hashes and DVC skips everything downstream. Zip archives (.keras,
.npz) carry no dates (``make_zip_reproducible``, ``save_npz``); JSON is written one way
(``write_json``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from latent.plumbing.pipeline import reading
from latent.plumbing.runtime import interrupts_deferred


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
        remove(staging)
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
        """Stage ``data`` as JSON (``write_json``)."""
        write_json(self.file(final), data)

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for staging, _ in self._staged:
                remove(staging)
            return
        for staging, _ in self._staged:
            if not staging.exists():
                raise FileNotFoundError(f"staged output {staging} was never written")
        with interrupts_deferred():  # all of them or none: Ctrl-C waits for the renames
            for staging, final in self._staged:
                replace(staging, final, final.parent / f".{final.name}.old")


def replace(staging: Path, final: Path, old: Path) -> None:
    """Put ``staging`` (a file or directory) where ``final`` is: the previous ``final`` is renamed
    to ``old`` first and removed last, so a kill at any moment leaves ``final`` or ``old``
    complete."""
    remove(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(staging, final)
    remove(old)


def write_json(path: Path, data: dict) -> None:
    """``data`` as pretty-printed JSON (key order kept, newline at the end)."""
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def remove(path: Path) -> None:
    """Delete a file, link or directory tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def _write_zip(path: Path, members: list[tuple[str, bytes, int]]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, compression in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def _renumber_shared_objects(config, ids: dict[int, int]):
    """Keras' config.json names shared objects by their Python id(), which differs from process
    to process: number them 0, 1, 2, ... in order of appearance instead (same sharing)."""
    if isinstance(config, dict):
        return {
            key: ids.setdefault(value, len(ids))
            if key == "shared_object_id"
            else _renumber_shared_objects(value, ids)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_renumber_shared_objects(value, ids) for value in config]
    return config


def make_zip_reproducible(path: str | os.PathLike) -> None:
    """Rewrite a zip archive (e.g. a .keras file) so that the same content gives the same bytes:
    every entry dated 1980-01-01, Keras' ``date_saved`` left out of metadata.json and its
    process-specific shared object ids renumbered in config.json. Entries keep their order."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        members = [(i.filename, archive.read(i), i.compress_type) for i in archive.infolist()]
    for index, (name, data, compression) in enumerate(members):
        if name == "metadata.json":
            metadata = json.loads(data)
            metadata.pop("date_saved", None)
            members[index] = (name, json.dumps(metadata).encode(), compression)
        elif name == "config.json":
            config = _renumber_shared_objects(json.loads(data), {})
            members[index] = (name, json.dumps(config).encode(), compression)
    _write_zip(path, members)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` without the dates it writes into the archive (loads with ``np.load``)."""
    members = []
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
        members.append((f"{name}.npy", buffer.getvalue(), zipfile.ZIP_STORED))
    _write_zip(Path(path), members)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read at once (no pickles), or the one-line error."""
    with reading(path, "a NumPy .npz archive"), np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
