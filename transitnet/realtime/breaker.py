"""A circuit breaker across polling ticks.

After ``threshold`` consecutive failed ticks the breaker opens and the feed is not polled
for ``base_s x 2ⁿ`` seconds (n = how many times it has opened in a row, starting at 0),
with ± ``jitter`` relative noise, capped at ``cap_s``. When the pause ends one trial tick is
allowed (half-open): success closes the breaker, failure re-opens it with the next longer
pause. The state is a small JSON-ready dict so it survives between ``ingest once`` runs.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class CircuitBreaker:
    """Open the circuit after repeated failed ticks; back off exponentially.

    Attributes:
        threshold: Consecutive failed ticks that open the breaker.
        base_s: First pause, in seconds.
        cap_s: Longest pause, in seconds.
        jitter: Relative jitter of a pause (0.1 → ±10 %), applied before the cap.
        failures: Consecutive failed ticks so far.
        trips: Consecutive times the breaker has opened (n in 30 s x 2ⁿ).
        open_until: While set and in the future, ticks are skipped.
    """

    threshold: int = 3
    base_s: float = 30.0
    cap_s: float = 3600.0
    jitter: float = 0.1
    failures: int = 0
    trips: int = 0
    open_until: datetime | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("breaker needs threshold >= 1 and 0 < base_s <= cap_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("breaker jitter must be in [0, 1)")

    def allows(self, now: datetime) -> bool:
        """Whether a tick at ``now`` may poll the feed."""
        return self.open_until is None or now >= self.open_until

    def record_success(self) -> None:
        """A tick succeeded: close the breaker and forget past failures."""
        if self.trips:
            logger.info("circuit breaker closed after %d trip(s)", self.trips)
        self.failures = 0
        self.trips = 0
        self.open_until = None

    def record_failure(self, now: datetime) -> datetime | None:
        """A tick failed; returns the time the breaker stays open until, if it opened."""
        self.failures += 1
        if self.failures < self.threshold:
            return None
        pause = self.base_s * 2.0**self.trips
        pause *= 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)
        pause = min(pause, self.cap_s)
        self.open_until = now + timedelta(seconds=pause)
        self.trips += 1
        logger.warning(
            "circuit breaker open for %.0f s after %d failed ticks", pause, self.failures
        )
        return self.open_until

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (counts and the open-until time as ISO 8601 UTC)."""
        until = self.open_until.astimezone(UTC).isoformat() if self.open_until else None
        return {"failures": self.failures, "trips": self.trips, "open_until": until}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counts from :meth:`state_dict` output.

        Raises:
            ValueError: when the state is malformed.
        """
        try:
            failures, trips = int(state["failures"]), int(state["trips"])
            until = state.get("open_until")
            open_until = datetime.fromisoformat(until) if until else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed breaker state {state!r}: {exc}") from exc
        if open_until is not None and open_until.tzinfo is None:
            raise ValueError(f"breaker open_until {until!r} has no time zone")
        self.failures, self.trips, self.open_until = failures, trips, open_until
