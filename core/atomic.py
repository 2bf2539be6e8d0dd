"""Crash-safe writes: a file or a whole folder appears complete or not at all.

Everything the framework persists goes through here: model folders, training checkpoints,
vocoder checkpoints and small JSON state files. A folder is built in a temporary sibling,
its files are fsynced, then it is renamed into place (the previous version, if any, is moved
aside first and removed last, so a crash leaves either the old or the new folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "TMP_PREFIX", "atomic_folder", "fsync_dir", "fsync_tree", "save_tensors", "temporary_file", "umask_mode", "write_json_atomic",
    "write_text_atomic",
]

TMP_PREFIX = ".tmp-"  # temporary siblings start with this (readers skip them; cleaners remove them)


def umask_mode(base: int = 0o666) -> int:
    """``base`` under the process umask: the mode ``open()`` would give a new file (0o777 for folders)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def temporary_file(path: Path, suffix: str = "") -> Path:
    """An empty temporary sibling of ``path`` with the mode a plain ``open()`` would give it (not mkstemp's 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, umask_mode(0o666))
    return Path(tmp)


def save_tensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: Optional[dict[str, str]] = None) -> None:
    """safetensors ``save_file`` with the user's umask (safetensors itself creates files 0600)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, umask_mode(0o666))


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename inside it) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _apply_umask(root: Path) -> None:
    """Give every file and folder under ``root`` the mode a plain ``open()`` / ``mkdir()`` would (0644 / 0755 under umask 022)."""
    file_mode, dir_mode = umask_mode(0o666), umask_mode(0o777)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(folder, name), file_mode)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file under ``root``, then every directory (deepest first)."""
    dirs = []
    for folder, _, files in os.walk(root):
        dirs.append(folder)
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
    for folder in reversed(dirs):
        fsync_dir(folder)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` through a fsynced temporary file and a rename."""
    path = Path(path)
    tmp = temporary_file(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 1) -> None:
    """Write ``data`` as JSON to ``path`` through a fsynced temporary file and a rename."""
    path = Path(path)
    tmp = temporary_file(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike, backup: Optional[str | os.PathLike] = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``directory`` atomically.

    ``backup``: where the previous ``directory`` waits during the swap (default a hidden
    sibling); readers that find no ``directory`` after a crash mid-swap may look there.
    On an exception the temporary folder is removed and ``directory`` is untouched."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{directory.name}-", dir=directory.parent))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes 0700: give the folder the user's usual mode
    try:
        yield tmp
        _apply_umask(tmp)
        fsync_tree(tmp)
        if directory.exists():
            old = Path(backup) if backup is not None else directory.with_name(f".old-{directory.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            fsync_dir(directory.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
