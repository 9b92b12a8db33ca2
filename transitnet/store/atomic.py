"""Atomic file writes: readers never see a partial file.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace``
it onto the final name (atomic on POSIX). A kill in the middle leaves at most a
``.tmp-*`` file, which readers ignore and ``cleanup_temp_files`` removes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".tmp-"


@functools.cache
def _file_mode() -> int:
    """Mode a plain ``open()`` would give a new file: 0o666 less the process umask.

    ``mkstemp`` creates 0o600 files; published files should be readable by whoever the
    umask allows (a shared store, a notebook server running as another user).
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name never ends in the final suffix, so globs such as DuckDB's
    # ``**/*.parquet`` never pick up a file that is still being written.
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _file_mode())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer`` on a binary handle of a temporary file, then publish it atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh)


def cleanup_temp_files(root: Path) -> int:
    """Remove leftover temporary files below ``root`` (after a crash); returns the count."""
    removed = 0
    for tmp in root.rglob(f"{TEMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
