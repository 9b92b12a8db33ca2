"""Atomic writes: all or nothing, no leftovers, and the mode a plain open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from transitnet.store.atomic import (
    TEMP_PREFIX,
    cleanup_temp_files,
    write_bytes_atomic,
    write_text_atomic,
    write_with_atomic,
)


def test_a_published_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode & 0o044 == 0o044  # group and others can read a shared store


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    write_bytes_atomic(target, b"old")

    def explode(fh: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_with_atomic(target, explode)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_cleanup_removes_leftover_temporaries_only(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc.tmp").write_bytes(b"partial")
    write_bytes_atomic(tmp_path / "kept.bin", b"ok")
    assert cleanup_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]
