from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import transitnet.cli as cli
from tests.gtfs.test_match import run_ob1, synthetic_feed, write_store

OPTIONS = ("--store", "--static", "--feed-id", "--dates", "--force", "--timezone", "--off-shape-m")


@pytest.fixture(autouse=True)
def only_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dispatch through the real ``transitnet`` entry point with the match command."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("transitnet.cli.match",))


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    static = tmp_path / "feed.zip"
    synthetic_feed().to_file(static)
    rows, _ = run_ob1(late_s=60.0, dwell_s=0.0)
    write_store(tmp_path / "store", rows, "syn")
    return tmp_path / "store", static


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["match", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text
    assert "matched/" in text


def test_match_writes_the_matched_table(store: tuple[Path, Path]) -> None:
    root, static = store
    status = cli.main(["match", "--store", str(root), "--static", str(static), "--feed-id", "syn",
                       "--dates", "2017-03-16", "--timezone", "America/Chicago"])  # fmt: skip
    assert status == 0
    (path,) = (root / "matched").rglob("part-*.parquet")
    table = pq.read_table(path).to_pandas()
    assert (table["match_status"] == "ok").all()
    assert table["delay_s"].between(59.0, 61.0).all()  # run_ob1 runs 60 s late


@pytest.mark.parametrize(
    "args",
    [["--dates", "16/03/2017"], ["--timezone", "Mars/Olympus"], ["--off-shape-m", "-5"]],
)
def test_bad_options_exit_2(store: tuple[Path, Path], args: list[str]) -> None:
    root, static = store
    with pytest.raises(SystemExit) as done:
        cli.main(["match", "--store", str(root), "--static", str(static), *args])
    assert done.value.code == 2


def test_a_folder_that_is_not_a_store_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["match", "--store", str(tmp_path), "--static", str(tmp_path)]) == 2
    assert "not a transitnet store" in capsys.readouterr().err


def test_an_unreadable_part_file_exits_1(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, static = store
    (part,) = (root / "positions").rglob("part-*.parquet")
    part.write_bytes(b"not parquet at all")
    assert cli.main(["match", "--store", str(root), "--static", str(static)]) == 1
    err = capsys.readouterr().err
    assert "cannot read the positions store" in err and "Traceback" not in err


@pytest.mark.real_data
def test_bad_static_feed_exits_2_with_one_line(
    store: tuple[Path, Path], shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = store
    bad = shared_data / "feeds" / "bullrunner" / "badgtfs.zip"
    assert cli.main(["match", "--store", str(root), "--static", str(bad)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no GTFS tables found" in errors[0]
    assert "Traceback" not in err
    assert not (root / "matched").exists()
    missing = pd.Timestamp.now().strftime("%Y%m%d%H%M%S")
    assert cli.main(["match", "--store", str(root), "--static", f"/nope/{missing}.zip"]) == 2
