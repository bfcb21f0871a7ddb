"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target.

A crash at any moment leaves either the old file or the new one, never a partial file.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class OutputFolderError(ValueError):
    """The output folder cannot be created or written; the message names it and the reason."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError("unexpected pos ...")
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or shutil.disk_usage(path.parent).free < 2**20
        if not full:
            raise
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise OutputFolderError(f"no space left to write {path} ({free / 2**20:.1f} MiB free on its disk); "
                                f"{'the previous file is intact' if path.exists() else 'nothing was written'}: free "
                                "some space and run the same command again to resume") from e
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def writable_folder(path: str | Path) -> Path:
    """Create ``path`` (parents too) and write and remove a probe file there, so that a folder that cannot hold
    the outputs (read-only, under a file, on a full or missing disk) fails before any work; returns ``path``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".mocobench-write-test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OutputFolderError(f"cannot write to the output folder {path}: {e.strerror or e} (choose another --out, "
                                "or make this one writable)") from e
    return path
