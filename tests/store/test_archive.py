from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from transitnet.store import archive as archive_mod
from transitnet.store.archive import (
    RawMeta,
    archive_body,
    compute_sha256,
    read_meta,
    relative_to_store,
    write_meta,
)
from transitnet.store.layout import publish_path

T = datetime(2024, 3, 1, 9, 30, 5, tzinfo=UTC)


def test_snapshot_is_written_raw_with_meta(tmp_path: Path) -> None:
    body = b"\x1f\x8b not really gzip"
    archived = archive_body(tmp_path, "f", T, body, snapshot=True)
    assert (
        archived.path == tmp_path / "raw/feed=f/date=2024-03-01/hour=09/f-2024-03-01T09-30-05Z.pb"
    )
    assert archived.path.read_bytes() == body and archived.sha256 == compute_sha256(body)
    meta = RawMeta(feed_id="f", fetched_at=T.isoformat(), sha256=archived.sha256, status=200,
                   file=relative_to_store(tmp_path, archived.path))  # fmt: skip
    meta_path = write_meta(archived.stem, meta)
    assert meta_path.name == "f-2024-03-01T09-30-05Z.meta.json"
    data = read_meta(meta_path)
    assert data["sha256"] == archived.sha256 and data["file"].startswith("raw/feed=f/")
    assert not list(tmp_path.rglob(".tmp-*"))


def test_byte_identical_snapshot_is_not_written_again(tmp_path: Path) -> None:
    first = archive_body(tmp_path, "f", T, b"same", snapshot=True)
    rel = relative_to_store(tmp_path, first.path)
    second = archive_body(tmp_path, "f", T + timedelta(seconds=30), b"same", snapshot=True,
                          previous_sha256=first.sha256, previous_file=rel)  # fmt: skip
    assert second.path is None and second.duplicate_of == rel
    assert second.sha256 == first.sha256
    third = archive_body(tmp_path, "f", T + timedelta(seconds=60), b"changed", snapshot=True,
                         previous_sha256=first.sha256, previous_file=rel)  # fmt: skip
    assert third.path is not None and third.duplicate_of is None
    assert len(list(tmp_path.rglob("*.pb"))) == 2


def test_error_bodies_and_empty_bodies(tmp_path: Path) -> None:
    err = archive_body(tmp_path, "f", T, b"<html>503</html>", snapshot=False)
    assert err.path is not None and err.path.suffix == ".body"
    empty = archive_body(tmp_path, "f", T, b"", snapshot=True)  # an empty 200 is archived
    assert empty.path is not None and empty.path.read_bytes() == b"" and empty.path.suffix == ".pb"
    none = archive_body(tmp_path, "f", T, None, snapshot=False)
    assert none.path is None and none.stem.name == "f-2024-03-01T09-30-05Z_2"


def test_failure_inside_the_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exploding_write(path: Path, data: bytes) -> None:
        with publish_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(archive_mod, "write_bytes_published", exploding_write)
    with pytest.raises(OSError, match="disk full"):
        archive_body(tmp_path, "f", T, b"x" * 1000, snapshot=True)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_read_meta_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "x.meta.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_meta(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        read_meta(bad)
