"""Shared fixtures. Real recorded data is reached only through ``shared_data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data",
    Path.cwd() / ".." / "shared" / "data",
)


def find_shared_data() -> Path | None:
    """Return ``../shared/data`` (or ``$TRANSITNET_SHARED_DATA``) when it exists."""
    env = os.environ.get("TRANSITNET_SHARED_DATA")
    candidates = (Path(env),) if env else _CANDIDATES
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recorded data folder.

    Skips when the folder is absent, unless ``TRANSITNET_REQUIRE_REAL_DATA=1`` is set
    (as ``.ci/run`` does), in which case its absence fails the test.
    """
    path = find_shared_data()
    if path is None:
        if os.environ.get("TRANSITNET_REQUIRE_REAL_DATA") == "1":
            pytest.fail("TRANSITNET_REQUIRE_REAL_DATA=1 but ../shared/data was not found")
        pytest.skip("../shared/data is absent (set TRANSITNET_REQUIRE_REAL_DATA=1 to require it)")
    return path
