from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from transitnet.realtime.breaker import CircuitBreaker

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def pauses(breaker: CircuitBreaker, trips: int) -> list[float]:
    """Fail ticks until the breaker has opened ``trips`` times; return each pause."""
    out: list[float] = []
    now = T0
    while len(out) < trips:
        assert breaker.allows(now)
        until = breaker.record_failure(now)
        if until is not None:
            out.append((until - now).total_seconds())
            assert not breaker.allows(now) and not breaker.allows(until - timedelta(seconds=1))
            now = until
    return out


def test_opens_after_three_failures_and_doubles_up_to_one_hour() -> None:
    breaker = CircuitBreaker(jitter=0.0)
    assert breaker.record_failure(T0) is None and breaker.record_failure(T0) is None
    got = pauses(breaker, 9)
    assert got == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_jitter_stays_within_bounds_and_cap() -> None:
    breaker = CircuitBreaker(jitter=0.2, rng=random.Random(7))
    got = pauses(breaker, 10)
    for n, pause in enumerate(got):
        nominal = 30 * 2**n
        assert min(nominal * 0.8, 3600) <= pause <= min(nominal * 1.2, 3600)
    assert len(set(got[:5])) == 5  # jitter actually varies the pauses


def test_success_closes_and_resets() -> None:
    breaker = CircuitBreaker(jitter=0.0)
    pauses(breaker, 2)
    breaker.record_success()
    assert breaker.allows(T0) and breaker.failures == 0 and breaker.trips == 0
    assert pauses(breaker, 1) == [30]


def test_state_round_trips_through_json() -> None:
    breaker = CircuitBreaker(jitter=0.0)
    pauses(breaker, 2)
    state = json.loads(json.dumps(breaker.state_dict()))
    restored = CircuitBreaker(jitter=0.0)
    restored.load_state_dict(state)
    assert (restored.failures, restored.trips, restored.open_until) == (
        breaker.failures, breaker.trips, breaker.open_until,
    )  # fmt: skip
    assert restored.open_until is not None and restored.open_until.tzinfo is not None


@pytest.mark.parametrize(
    "state",
    [{}, {"failures": "x", "trips": 0}, {"failures": 1, "trips": 0, "open_until": "garbage"},
     {"failures": 1, "trips": 0, "open_until": "2024-01-01T00:00:00"}],
)  # fmt: skip
def test_bad_state_is_a_clear_error(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="breaker"):
        CircuitBreaker().load_state_dict(state)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(base_s=60, cap_s=30)
