from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from transitnet.store.state import FeedState, load_feed_state, save_feed_state


def test_state_round_trip(tmp_path: Path) -> None:
    state = FeedState("f", last_sha256="ab", etag='"v1"', last_keys={"id:a": [1, "t", None]},
                      deferred_until=datetime(2024, 1, 1, tzinfo=UTC),
                      breaker={"failures": 1, "trips": 0, "open_until": None})  # fmt: skip
    save_feed_state(tmp_path, state)
    assert load_feed_state(tmp_path, "f") == state
    assert load_feed_state(tmp_path, "other") == FeedState("other")


BAD_STATES = [
    "{oops",
    "[]",
    '{"version": 99}',
    '{"version": 1, "feed_id": "g"}',
    '{"version": 1, "feed_id": "f", "surprise": 1}',
]


@pytest.mark.parametrize("text", BAD_STATES)
def test_corrupt_state_is_set_aside(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state/f.json"
    path.parent.mkdir()
    path.write_text(text)
    assert load_feed_state(tmp_path, "f") == FeedState("f")
    aside = list(path.parent.glob("f.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == text and not path.exists()
    assert "unreadable state" in caplog.text
